// The per-rank file that holds a rank's fp32 master weights and AdamW moments under
// `parallel.offload=disk` (ZeRO-Infinity's NVMe offload, for CPU boxes).
//
// Layout: each optimizer slot (a parameter, or this rank's ZeRO range of one) owns a
// region of 3 × n float32. The region is cut into chunks of at most `chunk` elements,
// and a chunk of L elements is stored as [master L | exp_avg L | exp_avg_sq L], so
// one positioned read brings everything one AdamW update of that chunk needs.
//
// Why fixed-size buffers and positioned reads, not mmap: `ulimit -v` (RLIMIT_AS)
// counts mapped address space, so mapping the whole file would fail in exactly the
// situation offload exists for; streaming through two chunk buffers (ZeRO-Infinity's
// swap-in / swap-out of optimizer sub-groups) bounds the resident optimizer state to
// 2 × 12 × chunk bytes whatever the model size, and page cache is not charged to the
// process. Reads and writes go through libuv's thread pool (fs.read / fs.write on the
// fd), so the next chunk's read runs while the main thread updates the current one.
import { closeSync, fsyncSync, mkdirSync, openSync, read, readSync, unlinkSync, write, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface Region {
  /** First element of the region in the file. */
  base: number;
  /** Elements of the slot (the region holds 3 × n). */
  n: number;
}

/** Elements per chunk by default: 256 Ki floats = 3 MiB per chunk buffer (two are used); reads of 3 MiB already run at disk speed. */
export const DEFAULT_CHUNK = 1 << 18;

export type Part = 'master' | 'exp_avg' | 'exp_avg_sq';
const PART_INDEX: Record<Part, number> = { master: 0, exp_avg: 1, exp_avg_sq: 2 };

export class OffloadStore {
  readonly path: string;
  private fd: number;
  readonly regions: Region[] = [];
  private total = 0;
  private readonly cleanup = () => this.remove();

  constructor(dir: string, rank: number, readonly chunk = DEFAULT_CHUNK) {
    if (!Number.isInteger(chunk) || chunk <= 0 || chunk % 64 !== 0) throw new Error(`offload: chunk size ${chunk} must be a positive multiple of 64 elements`);
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, `athanor-offload-rank-${rank}.bin`);
    try {
      // 'w+' truncates a file a killed run left behind: the file is working state, not a checkpoint.
      this.fd = openSync(this.path, 'w+');
    } catch (e) {
      throw new Error(`parallel.offloadDir: cannot create ${this.path} (${(e as Error).message})`);
    }
    // Working state only: the run's checkpoints hold what a resume needs, so the file goes when the process does.
    process.once('exit', this.cleanup);
  }

  /** Reserves a region for a slot of n elements; returns its index. */
  addRegion(n: number): number {
    this.regions.push({ base: this.total, n });
    this.total += 3 * n;
    return this.regions.length - 1;
  }

  /** Bytes the file holds once every region is written. */
  get bytes(): number {
    return 4 * this.total;
  }

  /** The chunks of region r: element range [start, start + len) of the slot. */
  chunks(r: number): { start: number; len: number }[] {
    const n = this.regions[r]!.n;
    const out: { start: number; len: number }[] = [];
    for (let s = 0; s < n; s += this.chunk) out.push({ start: s, len: Math.min(this.chunk, n - s) });
    return out;
  }

  private pos(r: number, start: number): number {
    return 4 * (this.regions[r]!.base + 3 * start);
  }

  /** Reads chunk (r, start, len) into buf[0, 3·len): master, exp_avg, exp_avg_sq. */
  readChunk(r: number, start: number, len: number, buf: Float32Array): Promise<void> {
    return this.io(read, r, start, len, buf, 'read');
  }

  writeChunk(r: number, start: number, len: number, buf: Float32Array): Promise<void> {
    return this.io(write, r, start, len, buf, 'write');
  }

  writeChunkSync(r: number, start: number, len: number, buf: Float32Array): void {
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, 12 * len);
    let done = 0;
    const at = this.pos(r, start);
    while (done < bytes.byteLength) done += writeSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
  }

  /** Reads elements [start, start + out.length) of one part of region r (any alignment to chunks). */
  readPartSync(r: number, part: Part, start: number, out: Float32Array): void {
    let i = 0;
    while (i < out.length) {
      const e = start + i;
      const c0 = e - (e % this.chunk);
      const len = Math.min(this.chunk, this.regions[r]!.n - c0);
      const take = Math.min(out.length - i, c0 + len - e);
      const at = this.pos(r, c0) + 4 * (PART_INDEX[part] * len + (e - c0));
      const bytes = new Uint8Array(out.buffer, out.byteOffset + 4 * i, 4 * take);
      let done = 0;
      while (done < bytes.byteLength) {
        const k = readSync(this.fd, bytes, done, bytes.byteLength - done, at + done);
        if (k === 0) throw new Error(`offload: ${this.path} ends before byte ${at + done} (truncated?)`);
        done += k;
      }
      i += take;
    }
  }

  private io(op: typeof read | typeof write, r: number, start: number, len: number, buf: Float32Array, what: string): Promise<void> {
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, 12 * len);
    const at = this.pos(r, start);
    return new Promise((resolve, reject) => {
      const step = (done: number): void => {
        if (done === bytes.byteLength) { resolve(); return; }
        (op as (fd: number, b: Uint8Array, o: number, l: number, p: number, cb: (err: Error | null, n: number) => void) => void)(
          this.fd, bytes, done, bytes.byteLength - done, at + done, (err, n) => {
            if (err) reject(new Error(`offload: ${what} of ${this.path} at byte ${at + done} failed: ${err.message}`));
            else if (n === 0) reject(new Error(`offload: ${this.path} ends before byte ${at + done} (truncated?)`));
            else step(done + n);
          });
      };
      step(0);
    });
  }

  sync(): void {
    fsyncSync(this.fd);
  }

  /** Closes and deletes the file (also done at process exit). */
  remove(): void {
    if (this.fd >= 0) {
      try { closeSync(this.fd); } catch { /* already closed */ }
      this.fd = -1;
    }
    try { unlinkSync(this.path); } catch { /* already gone */ }
    process.removeListener('exit', this.cleanup);
  }
}
