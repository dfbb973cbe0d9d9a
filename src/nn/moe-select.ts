// The one top-K selection rule of the MoE router, shared by routing, the bias update's
// margin histograms and reroute's capacity fit, so that all three agree on ties.

/**
 * Partial selection sort: moves the `n` best experts by `score` (ties to the lower index, as
 * routeTokens breaks them) into order[0..n), best first. `order` must hold 0..E−1 on entry.
 */
export function selectBest(score: Float64Array, order: Int32Array, n: number): void {
  const E = order.length;
  for (let k = 0; k < n; k++) {
    let bi = k;
    for (let j = k + 1; j < E; j++) {
      const a = order[j]!, b = order[bi]!;
      if (score[a]! > score[b]! || (score[a] === score[b] && a < b)) bi = j;
    }
    const tmp = order[k]!; order[k] = order[bi]!; order[bi] = tmp;
  }
}
