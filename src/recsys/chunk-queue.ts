// Bytes received from a socket and not yet consumed, as the chunks they arrived in: the frame
// readers (protocol.ts FrameReader, reply-reader.ts ReplyReader) append each chunk and take
// headers and payloads out of the front, copying each byte once.
export class ChunkQueue {
  private chunks: Buffer[] = [];
  /** Bytes held. */
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** Fills dst from the front of the queue; the caller checks that `length` covers it. */
  take(dst: Uint8Array): void {
    let off = 0;
    while (off < dst.length) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, dst.length - off);
      dst.set(k === c.length ? c : c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.chunks.shift(); else this.chunks[0] = c.subarray(k);
    }
    this.length -= dst.length;
  }
}
