// Stage partitioning: contiguous layer ranges, one per virtual stage, chosen to minimise
// the most expensive stage (the pipeline runs at the pace of its slowest stage). The
// first stage also pays for the embedding, the last for the final norm, head and loss,
// so with a large vocabulary the last stage gets fewer layers.

export interface StageCosts {
  /** Cost of each layer, in order. */
  layers: readonly number[];
  /** Extra cost of the first stage (embedding). */
  first: number;
  /** Extra cost of the last stage (final norm + head + loss). */
  last: number;
}

/** Layer ranges [lo, hi) of `stages` contiguous stages, each with at least one layer. */
export function partitionLayers(c: StageCosts, stages: number): [number, number][] {
  const L = c.layers.length;
  if (!Number.isInteger(stages) || stages < 1) throw new Error(`partitionLayers: stages must be a positive integer, got ${stages}`);
  if (L < stages) throw new Error(`partitionLayers: ${L} layers cannot fill ${stages} stages with at least one layer each`);
  const pre = [0];
  for (const x of c.layers) pre.push(pre[pre.length - 1]! + x);
  const cost = (s: number, lo: number, hi: number): number =>
    pre[hi]! - pre[lo]! + (s === 0 ? c.first : 0) + (s === stages - 1 ? c.last : 0);
  // best[s][i]: the smallest possible maximum stage cost when stages 0..s-1 hold layers [0, i).
  // Ties prefer the earlier cut, which keeps layers off the (head-heavy) last stage.
  const best = Array.from({ length: stages + 1 }, () => new Array<number>(L + 1).fill(Infinity));
  const cut = Array.from({ length: stages + 1 }, () => new Array<number>(L + 1).fill(-1));
  best[0]![0] = 0;
  for (let s = 1; s <= stages; s++) {
    for (let i = s; i <= L - (stages - s); i++) {
      for (let j = s - 1; j < i; j++) {
        if (best[s - 1]![j] === Infinity) continue;
        const v = Math.max(best[s - 1]![j]!, cost(s - 1, j, i));
        if (v < best[s]![i]! - 1e-9 * Math.abs(v)) { best[s]![i] = v; cut[s]![i] = j; }
      }
    }
  }
  const out: [number, number][] = [];
  let i = L;
  for (let s = stages; s >= 1; s--) { const j = cut[s]![i]!; out.unshift([j, i]); i = j; }
  return out;
}

/** Cost of every stage of a partition (for reports and tests). */
export function stageCosts(c: StageCosts, parts: readonly [number, number][]): number[] {
  return parts.map(([lo, hi], s) => {
    let x = 0;
    for (let i = lo; i < hi; i++) x += c.layers[i]!;
    return x + (s === 0 ? c.first : 0) + (s === parts.length - 1 ? c.last : 0);
  });
}
