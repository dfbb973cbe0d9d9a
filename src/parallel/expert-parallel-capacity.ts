// Row capacity of expert parallelism's routing-dependent buffers. The rows an ep rank
// receives (R) change every forward with the routing, and every buffer sized by them (the
// received rows, the expert MLP's hidden activations, all their gradients) would be a new
// size each step: allocated fresh, zero-filled by V8, then left to the garbage collector
// (moe-tiny ep=2: 44 MiB a step, two in-step mark-compacts, about 0.1 CPU-s of 0.8).
// Instead those buffers are sized at a capacity of rows: R rounded up to a fixed
// geometric grid, held at the largest value any of the last CAPACITY_WINDOW forwards
// needed. Sizes then recur step after step (buffer-pool hits), and fall back once the
// routing calms. The price: after a routing spike the capacity, and the memory, stay high
// for the window. The rows past R are padding: zero, outside every expert's block
// (ops/moe.ts groupedMatmul skips them).

import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Ratio between neighbouring capacities: at most 1/8 of the rows are padding. */
export const CAPACITY_GROWTH = 1.125;

/** A staging buffer of the exchanges (expert-parallel-comm.ts) that must grow takes this many times the size asked for. */
export const SHARED_GROWTH = 1.25;

/** Forwards (MoE layers × micro-batches) whose largest need holds the capacity. */
export const CAPACITY_WINDOW = 64;

/** The smallest grid capacity ⌈g^j⌉ (j ≥ 0 integer, g = CAPACITY_GROWTH) that holds `rows`. */
export function capacityRows(rows: number): number {
  if (rows <= 1) return Math.max(0, rows);
  let j = Math.ceil(Math.log(rows) / Math.log(CAPACITY_GROWTH) - 1e-9);
  while (Math.ceil(CAPACITY_GROWTH ** j) < rows) j++;
  return Math.ceil(CAPACITY_GROWTH ** j);
}

/** The capacity to use for each forward: the largest grid capacity needed over the window. */
export class RowCapacity {
  private readonly recent: number[] = [];
  private next = 0;
  /** Capacity for a forward that receives `rows` rows. */
  fit(rows: number): number {
    const c = capacityRows(rows);
    if (this.recent.length < CAPACITY_WINDOW) this.recent.push(c);
    else this.recent[this.next] = c;
    this.next = (this.next + 1) % CAPACITY_WINDOW;
    let m = 0;
    for (const v of this.recent) if (v > m) m = v;
    return m;
  }
}

/**
 * A full garbage collection now, for a caller that has just let go of buffers it knows are
 * large and unreachable. V8 frees an ArrayBuffer's memory only when a garbage collection
 * finds it unreachable; the pooled buffers of an old row capacity have lived through steps
 * (old generation), so only a mark-compact frees them, and one runs when V8's heuristics
 * choose: meanwhile the new capacity's buffers are allocated beside them (moe-tiny dropless
 * ep=2: 33-40 MiB of dropped buffers still counted at the step's peak, 15% of it). The
 * collection these buffers need anyway is run at the moment they are dropped. Uses the
 * process's `gc` where node runs with --expose-gc, else the same function taken once from
 * a fresh context after turning the flag on (V8 installs `gc` in contexts created after).
 */
export function collectGarbage(): void {
  collector ??= findCollector();
  collector();
}
let collector: (() => void) | undefined;
function findCollector(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  const f = runInNewContext('gc') as unknown;
  // A runtime without a callable collector only loses the early release: the dropped buffers
  // then go when V8 next collects, as before. Training must not stop over it.
  return typeof f === 'function' ? (f as () => void) : () => undefined;
}
