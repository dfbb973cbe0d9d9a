// model.moe.overflow = reroute: fit each routing group into the expert capacity by moving
// SELECTION thresholds instead of dropping tokens in position order.
//
// With a capacity, GShard drops what overflows an expert in token order (k-th choices of all
// tokens before any (k+1)-th choice, then by position): which tokens lose their expert depends
// on where they sit in the sequence, not on how much they care. Here, before capacity is
// applied, every expert that would take more than `capacity` of the group's tokens gets a
// group-local offset o_e ≤ 0 on its selection score (probs + bias + o), lowered just enough
// that exactly the tokens with the smallest selection margin (score minus the best unchosen
// score) leave it for their next-best expert. Lowering one expert can push another over, so
// this repeats (only over-capacity experts move, and only down: a descending-threshold
// auction) until all fit or `maxIters` passes are spent; whatever still overflows is then
// dropped (or moved by SWIPE) by the ordinary capacity step.
//
// Everything is per routing group (one sequence) and uses exact margins (no histogram), so
// the routing does not depend on how a batch is split over data- or expert-parallel ranks.
// The combine weights stay the router's probabilities of the final experts (renormalized over
// the K, as always), so the offsets, like the bias, only steer selection.
import { selectBest } from './moe-select.js';

/** Passes of the threshold auction per group before leftovers fall to the capacity step. */
export const REROUTE_MAX_ITERS = 32;

/**
 * Selection offsets (≤ 0, length E) for the Tg tokens from row t0 of probs (N, E) row-major,
 * scored as routeTokens scores them (probs + bias, then + offset), such that top-K selection
 * gives every expert at most `capacity` tokens (when reachable within maxIters passes).
 */
export function fitCapacityOffsets(
  probs: ArrayLike<number>, t0: number, Tg: number, E: number, K: number,
  bias: ArrayLike<number> | null, capacity: number, maxIters = REROUTE_MAX_ITERS,
): Float64Array {
  const off = new Float64Array(E);
  // Nothing can move when every token takes every expert, and nothing needs to without a cap.
  if (K >= E || !Number.isFinite(capacity)) return off;
  const score = new Float64Array(E), order = new Int32Array(E), counts = new Int32Array(E);
  // margins of expert e's tokens at [e·Tg, e·Tg + counts[e]) (typed: a numeric sort, no boxing)
  const margins = new Float64Array(E * Tg);
  for (let it = 0; it < maxIters; it++) {
    counts.fill(0);
    for (let t = t0; t < t0 + Tg; t++) {
      for (let e = 0; e < E; e++) { score[e] = probs[t * E + e]! + (bias ? bias[e]! : 0) + off[e]!; order[e] = e; }
      selectBest(score, order, K + 1);
      const vK1 = score[order[K]!]!;
      for (let r = 0; r < K; r++) { const e = order[r]!; margins[e * Tg + counts[e]!] = score[e]! - vK1; counts[e]!++; }
    }
    let over = false;
    for (let e = 0; e < E; e++) {
      const r = counts[e]! - capacity;
      if (r <= 0) continue;
      over = true;
      const m = margins.subarray(e * Tg, e * Tg + counts[e]!).sort();
      // Lower e past the r smallest margins and not past the (r+1)-th: midway between them.
      // Equal margins cannot be split; then all of the tied tokens leave (e ends below capacity).
      const lo = m[r - 1]!, hi = r < m.length ? m[r]! : Infinity;
      off[e]! -= hi > lo && Number.isFinite(hi) ? lo + (hi - lo) / 2 : nudgeAbove(lo);
    }
    if (!over) break;
  }
  return off;
}

/** A value strictly above x ≥ 0 by a relative hair (so score − value falls below the tie). */
function nudgeAbove(x: number): number {
  return x + Math.max(Math.abs(x) * 1e-9, 1e-12);
}
