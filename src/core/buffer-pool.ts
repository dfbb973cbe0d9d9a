// Caching allocator. A training step allocates the same set of activation and
// gradient sizes every step; recycling exact-size buffers avoids fresh multi-MB
// ArrayBuffers (zero-filled by V8 and collected late) on every step.
import { allocStorage, type DType, type Storage } from './dtype.js';

const MIN_POOLED = 256; // smaller arrays are cheaper to allocate than to track

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
  private free = new Map<DType, Map<number, Storage[]>>();
  private s: PoolStats = { hits: 0, misses: 0, releases: 0, pooledBytes: 0, allocatedBytes: 0 };

  /** Returns a buffer of exactly `n` elements. Its contents are undefined. */
  acquire(dtype: DType, n: number): Storage {
    if (this.enabled && n >= MIN_POOLED) {
      const list = this.free.get(dtype)?.get(n);
      const buf = list?.pop();
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
    if (!list) byLen.set(buf.length, (list = []));
    list.push(buf);
    this.s.releases++;
    this.s.pooledBytes += buf.byteLength;
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
