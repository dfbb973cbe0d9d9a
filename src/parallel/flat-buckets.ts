// The flat parameter layout of data parallelism: one contiguous range per parameter, in
// buckets of about bucketMB in reverse parameter order (the order backward finishes them),
// each bucket split evenly over the ranks; a rank's ZeRO shard is its slice of every bucket.
import type { Tensor } from '../core/tensor.js';
import type { ParamSegment } from '../optim/index.js';
import { evenCounts } from '../runtime/collectives.js';

export interface Bucket {
  /** Position in FlatLayout.buckets. */
  index: number;
  /** Flat element range [lo, hi). */
  lo: number;
  hi: number;
  params: Tensor[];
  /** Elements of the bucket each rank owns (ZeRO partition). */
  counts: number[];
  pending: number;
  /** In-flight reduction of this step. */
  work: Promise<void> | null;
}

export interface FlatLayout {
  named: [string, Tensor][];
  offsets: Map<Tensor, number>;
  total: number;
  buckets: Bucket[];
  bucketOf: Map<Tensor, Bucket>;
}

/**
 * Flat layout and buckets. With `units` (ZeRO-3) each unit is exactly one bucket, so
 * gathering a unit is one all-gather; otherwise buckets fill up to bucketElems.
 */
export function planBuckets(named: [string, Tensor][], world: number, bucketElems: number, units?: Tensor[][]): FlatLayout {
  const offsets = new Map<Tensor, number>();
  let total = 0;
  for (const [, p] of named) { offsets.set(p, total); total += p.size; }
  const buckets: Bucket[] = [];
  const bucketOf = new Map<Tensor, Bucket>();
  let cur: Tensor[] = [];
  let curHi = total, curN = 0;
  const flush = () => {
    if (!cur.length) return;
    const lo = curHi - curN;
    const b: Bucket = { index: buckets.length, lo, hi: curHi, params: cur, counts: evenCounts(curN, world), pending: cur.length, work: null };
    for (const p of cur) bucketOf.set(p, b);
    buckets.push(b);
    curHi = lo; curN = 0; cur = [];
  };
  const unitOf = new Map<Tensor, number>();
  units?.forEach((u, i) => u.forEach((p) => unitOf.set(p, i)));
  for (let i = named.length - 1; i >= 0; i--) {
    const p = named[i]![1];
    if (units && cur.length && unitOf.get(cur[0]!) !== unitOf.get(p)) flush();
    cur.push(p);
    curN += p.size;
    if (!units && curN >= bucketElems) flush();
  }
  flush();
  return { named, offsets, total, buckets, bucketOf };
}

/** This rank's flat shard ranges (one per bucket). */
export function shardRanges(layout: FlatLayout, rank: number): [number, number][] {
  return layout.buckets.map((b) => {
    let off = b.lo;
    for (let r = 0; r < rank; r++) off += b.counts[r]!;
    return [off, off + b.counts[rank]!] as [number, number];
  });
}

/** Where each bucket's slice starts inside this rank's concatenated shard. */
export function shardOffsets(ranges: [number, number][]): number[] {
  const out: number[] = [];
  let off = 0;
  for (const [lo, hi] of ranges) { out.push(off); off += hi - lo; }
  return out;
}

/** Optimizer segments (param-relative) for flat ranges. */
export function segmentsFor(layout: FlatLayout, ranges: [number, number][]): ParamSegment[] {
  const out: ParamSegment[] = [];
  for (const [lo, hi] of ranges) {
    for (const [, p] of layout.named) {
      const base = layout.offsets.get(p)!;
      const a = Math.max(lo, base), b = Math.min(hi, base + p.size);
      if (a < b) out.push({ param: p, start: a - base, end: b - base });
    }
  }
  return out;
}
