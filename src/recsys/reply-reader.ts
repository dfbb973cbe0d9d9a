// The client's frame reader: protocol.ts's FrameReader semantics (headers checked against
// a payload limit before anything is buffered; payloads that carry data arrive in fresh
// 8-aligned buffers) with one difference for the trainer's hot path. A shared-memory
// answer's payload is only an 8-byte length read at once by the caller, so it is passed
// as a view of the socket chunk instead of a fresh ArrayBuffer: a trainer step receives
// one such frame per field per server, and the per-frame allocations were a visible part
// of its CPU and garbage.
import { FRAME_SHM, HEADER_BYTES, MAGIC, PROTOCOL_VERSION, ProtocolError, type FrameHeader } from './protocol.js';
import { ChunkQueue } from './chunk-queue.js';

export class ReplyReader {
  private readonly pending = new ChunkQueue();
  private header: FrameHeader | null = null;
  private readonly hdrBuf = Buffer.alloc(HEADER_BYTES);

  constructor(public maxPayload: number) {}

  private parseHeader(b: Buffer, at: number): FrameHeader {
    if (b.readUInt32LE(at) !== MAGIC) throw new ProtocolError('bad magic');
    if (b[at + 4] !== PROTOCOL_VERSION) throw new ProtocolError(`unsupported protocol version ${b[at + 4]}`);
    const length = b.readUInt32LE(at + 12);
    if (length > this.maxPayload) throw new ProtocolError(`payload of ${length} bytes exceeds the limit of ${this.maxPayload}`);
    return { type: b[at + 5]!, requestId: b.readUInt32LE(at + 8), length, flags: b.readUInt16LE(at + 6) };
  }

  /**
   * Feeds bytes; calls onFrame per complete frame. A FRAME_SHM payload may be a view into
   * `chunk`, valid during the call only; every other payload is a fresh buffer.
   */
  push(chunk: Buffer, onFrame: (h: FrameHeader, payload: Uint8Array) => void): void {
    let pos = 0;
    // Whole frames at the start of a chunk when nothing is buffered: read in place.
    if (this.pending.length === 0 && !this.header) {
      while (chunk.length - pos >= HEADER_BYTES) {
        const h = this.parseHeader(chunk, pos);
        const end = pos + HEADER_BYTES + h.length;
        if (end > chunk.length) break;
        const body = chunk.subarray(pos + HEADER_BYTES, end);
        pos = end;
        onFrame(h, (h.flags & FRAME_SHM) !== 0 ? body : fresh(body));
      }
      if (pos === chunk.length) return;
    }
    const rest = pos === 0 ? chunk : chunk.subarray(pos);
    this.pending.push(rest);
    for (;;) {
      if (!this.header) {
        if (this.pending.length < HEADER_BYTES) return;
        this.pending.take(this.hdrBuf);
        this.header = this.parseHeader(this.hdrBuf, 0);
      }
      if (this.pending.length < this.header.length) return;
      const h = this.header;
      const payload = new Uint8Array(Buffer.allocUnsafeSlow(h.length).buffer, 0, h.length);
      this.pending.take(payload);
      this.header = null;
      onFrame(h, payload);
    }
  }
}

/** A copy in its own ArrayBuffer (offset 0, so typed-array views of it are aligned). */
function fresh(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(Buffer.allocUnsafeSlow(b.length).buffer, 0, b.length);
  out.set(b);
  return out;
}
