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
