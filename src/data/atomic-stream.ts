// Streamed counterpart of src/io/atomic-write.ts for outputs too large to hold
// in memory (a .bin of a 100 GB corpus): bytes go through a buffer into a
// temporary file beside the target; commit() fsyncs and renames it over the
// target, abort() deletes it. A crash leaves the old target or none, never a
// torn one.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

let counter = 0;

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* some filesystems refuse directory fsync; the rename is still atomic */ }
}

export class AtomicStreamWriter {
  readonly path: string;
  readonly tmpPath: string;
  private fd: number;
  private buf: Uint8Array;
  private used = 0;
  private written = 0;
  private done = false;

  constructor(path: string, bufferBytes = 4 << 20) {
    this.path = path;
    mkdirSync(dirname(path), { recursive: true });
    this.tmpPath = join(dirname(path), `.${basename(path)}.${process.pid}.${(counter++).toString(36)}.${Date.now().toString(36)}.tmp`);
    this.fd = openSync(this.tmpPath, 'w');
    this.buf = new Uint8Array(bufferBytes);
  }

  /** Bytes accepted so far (buffered or on disk). */
  get bytesWritten(): number { return this.written + this.used; }

  write(bytes: Uint8Array): void {
    if (this.done) throw new Error(`${this.path}: write after commit/abort`);
    if (bytes.byteLength >= this.buf.byteLength) {
      this.flush();
      this.writeAll(bytes);
      return;
    }
    if (this.used + bytes.byteLength > this.buf.byteLength) this.flush();
    this.buf.set(bytes, this.used);
    this.used += bytes.byteLength;
  }

  /**
   * Hands out the free tail of the buffer (at least `minBytes`), so callers can
   * encode straight into it and then `advance()`; avoids a copy per chunk.
   */
  reserve(minBytes: number): Uint8Array {
    if (this.used + minBytes > this.buf.byteLength) this.flush();
    if (minBytes > this.buf.byteLength) this.buf = new Uint8Array(minBytes);
    return this.buf.subarray(this.used);
  }

  advance(n: number): void { this.used += n; }

  flush(): void {
    if (this.used > 0) {
      this.writeAll(this.buf.subarray(0, this.used));
      this.used = 0;
    }
  }

  private writeAll(b: Uint8Array): void {
    let off = 0;
    while (off < b.byteLength) off += writeSync(this.fd, b, off, b.byteLength - off);
    this.written += b.byteLength;
  }

  /** Flushes, fsyncs, closes; the data sits complete under `tmpPath`. */
  seal(): void {
    if (this.done) return;
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.done = true;
  }

  /** Seals if needed and renames the temporary file over the target. */
  commit(): void {
    this.seal();
    renameSync(this.tmpPath, this.path);
    fsyncDir(dirname(this.path));
  }

  abort(): void {
    if (!this.done) {
      try { closeSync(this.fd); } catch { /* already closed */ }
      this.done = true;
    }
    try { unlinkSync(this.tmpPath); } catch { /* already gone or renamed */ }
  }
}
