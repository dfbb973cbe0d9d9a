// Caching allocator. A training step allocates the same set of activation and
// gradient sizes every step; recycling exact-size buffers avoids fresh multi-MB
// ArrayBuffers (zero-filled by V8 and collected late) on every step.
// Some sizes are not the same every step (an MoE layer's rows per expert depend on the
// routing; under expert parallelism every buffer sized by the rows a rank receives), and
// an exact-size pool would keep one idle buffer of every size it has ever seen. So the
// trainer calls endStep() after each step: idle buffers are kept only for sizes used in
// this step and in the one before (steady-state sizes); a size new in this step is
// treated as one-off and its idle buffers go at once, rather than sitting idle through
// the next step beside that step's own one-off sizes (which doubled expert parallelism's
// routing-dependent memory). Every size is new in the first step, so the second step
// allocates its buffers again (once); from the third on, steady sizes are all hits.
import { allocStorage, type DType, type Storage } from './dtype.js';

const MIN_POOLED = 256; // smaller arrays are cheaper to allocate than to track

/**
 * Idle buffers of one size, the last step in which that size was acquired or released,
 * and the step of the use before that (-Infinity: none).
 */
interface FreeList { bufs: Storage[]; used: number; prev: number }

export interface PoolStats {
  hits: number;
  misses: number;
  releases: number;
  pooledBytes: number;
  allocatedBytes: number;
}

export class BufferPool {
  enabled = true;
  /** Upper bound on idle pooled bytes; beyond it released buffers are left to the GC. */
  maxPooledBytes = 8 * 1024 ** 3;
  /** Sees each newly allocated buffer before first use (the native backend requests huge pages for big ones). */
  onAllocate: ((buf: Storage) => void) | null = null;
  /** Called after each new allocation, once the buffer counts in the process's array-buffer bytes (array-buffer-peak.ts). */
  onGrow: (() => void) | null = null;
  // Keyed by dtype, then element count: no key string is built (and hashed) per acquire/release.
  private free = new Map<DType, Map<number, FreeList>>();
  private step = 0;
  private s: PoolStats = { hits: 0, misses: 0, releases: 0, pooledBytes: 0, allocatedBytes: 0 };

  /** Returns a buffer of exactly `n` elements. Its contents are undefined. */
  acquire(dtype: DType, n: number): Storage {
    if (this.enabled && n >= MIN_POOLED) {
      const list = this.free.get(dtype)?.get(n);
      if (list) this.touch(list);
      const buf = list?.bufs.pop();
      if (buf) {
        this.s.hits++;
        this.s.pooledBytes -= buf.byteLength;
        return buf;
      }
      this.s.misses++;
    }
    const buf = allocStorage(dtype, n);
    if (this.onAllocate) this.onAllocate(buf);
    this.s.allocatedBytes += buf.byteLength;
    this.onGrow?.();
    return buf;
  }

  release(dtype: DType, buf: Storage): void {
    if (!this.enabled || buf.length < MIN_POOLED) return;
    if (this.s.pooledBytes + buf.byteLength > this.maxPooledBytes) return;
    let byLen = this.free.get(dtype);
    if (!byLen) this.free.set(dtype, (byLen = new Map()));
    let list = byLen.get(buf.length);
    if (!list) byLen.set(buf.length, (list = { bufs: [], used: this.step, prev: -Infinity }));
    this.touch(list);
    list.bufs.push(buf);
    this.s.releases++;
    this.s.pooledBytes += buf.byteLength;
  }

  private touch(list: FreeList): void {
    if (list.used !== this.step) { list.prev = list.used; list.used = this.step; }
  }

  /**
   * Marks the end of a training step. Idle buffers are left to the GC for a size that was
   * neither acquired nor released during the step just ended (the size is forgotten), and
   * for a size used in this step but not in the one before (one-off: the size is
   * remembered for a step, so that if it recurs it is kept from then on).
   * Returns the bytes dropped.
   */
  endStep(): number {
    let dropped = 0;
    for (const byLen of this.free.values()) {
      for (const [n, list] of byLen) {
        const unused = list.used < this.step;
        if (!unused && list.prev === this.step - 1) continue;
        for (const b of list.bufs) dropped += b.byteLength;
        if (unused) byLen.delete(n);
        else list.bufs = [];
      }
    }
    this.s.pooledBytes -= dropped;
    this.step++;
    return dropped;
  }

  /**
   * Forgets a size now (every dtype): its idle buffers go to the GC, and buffers of it
   * released later count as one-off (dropped at the next endStep). For a caller that knows
   * a size will not recur soon: expert parallelism's row capacity after it moved
   * (parallel/expert-parallel.ts), whose old-size buffers the step rule would otherwise keep
   * idle through the whole next step beside the new size's. Returns the bytes dropped.
   */
  forget(n: number): number {
    let dropped = 0;
    for (const byLen of this.free.values()) {
      const list = byLen.get(n);
      if (!list) continue;
      for (const b of list.bufs) dropped += b.byteLength;
      byLen.delete(n);
    }
    this.s.pooledBytes -= dropped;
    return dropped;
  }

  stats(): PoolStats {
    return { ...this.s };
  }

  clear(): void {
    this.free.clear();
    this.s.pooledBytes = 0;
  }
}

export const pool = new BufferPool();
