// Routing decisions of an MoE layer: top-k selection, capacity, token dropping and SWIPE
// reassignment, and the permutation that groups assignments by expert. Integer work over
// (tokens × experts) only; the hidden dim is never touched here (ops/moe.ts moves rows).
//
// Capacity is per routing group (one sequence of T tokens), as in GShard: which tokens
// are dropped then does not depend on how a batch is split over data-parallel or
// expert-parallel ranks, so parallel runs drop exactly the tokens a single process does.

export interface RouteOptions {
  /** Tokens N = groups × groupSize. */
  groups: number;
  groupSize: number;
  experts: number;
  topK: number;
  /** 0 = dropless. */
  capacityFactor: number;
  swipe: boolean;
  /** Added to the scores for selection only (DeepSeek-V3 aux-loss-free balancing); null = none. */
  bias: Float32Array | null;
}

export interface Routing {
  /** Final expert of assignment (t, k) at t·K + k (SWIPE may have moved it). */
  expert: Int32Array;
  /** Row of assignment (t, k) in the expert-grouped buffer, −1 when dropped. */
  slot: Int32Array;
  /** Source token of each expert-grouped row (length S = kept assignments). */
  srcRow: Int32Array;
  /** Kept assignments per expert (rows of each expert's block, in expert order). */
  counts: Int32Array;
  /** First choices before capacity, per group and expert (for the load-balancing loss): groups × E. */
  chosen: Int32Array;
  dropped: number;
  /** Assignments SWIPE moved to another expert. */
  moved: number;
  /** Tokens' expert capacity per group (Infinity when dropless). */
  capacity: number;
}

/** Routes N tokens given router probabilities (N, E) row-major. */
export function routeTokens(probs: ArrayLike<number>, o: RouteOptions): Routing {
  const { groups, groupSize: Tg, experts: E, topK: K } = o;
  const N = groups * Tg;
  if (probs.length !== N * E) throw new Error(`routeTokens: ${probs.length} probabilities for ${N} tokens × ${E} experts`);
  const expert = new Int32Array(N * K);
  const kept = new Uint8Array(N * K);
  const chosen = new Int32Array(groups * E);
  const capacity = o.capacityFactor > 0 ? Math.ceil((o.capacityFactor * Tg * K) / E) : Infinity;
  const fill = new Int32Array(E);
  const score = new Float64Array(E);
  let dropped = 0, moved = 0;
  for (let g = 0; g < groups; g++) {
    // top-K by score; ties go to the lower expert index (deterministic).
    for (let t = g * Tg; t < (g + 1) * Tg; t++) {
      for (let e = 0; e < E; e++) score[e] = probs[t * E + e]! + (o.bias ? o.bias[e]! : 0);
      for (let k = 0; k < K; k++) {
        let best = -1, bv = -Infinity;
        for (let e = 0; e < E; e++) {
          if (score[e]! > bv) { bv = score[e]!; best = e; }
        }
        expert[t * K + k] = best;
        score[best] = -Infinity;
        chosen[g * E + best]!++;
      }
    }
    // Capacity: k-th choices of all tokens before any (k+1)-th choice (GShard priority).
    fill.fill(0);
    const overflow: number[] = [];
    for (let k = 0; k < K; k++) {
      for (let t = g * Tg; t < (g + 1) * Tg; t++) {
        const a = t * K + k, e = expert[a]!;
        if (fill[e]! < capacity) { fill[e]!++; kept[a] = 1; } else overflow.push(a);
      }
    }
    for (const a of overflow) {
      if (o.swipe) {
        // SWIPE: the most probable expert that still has room and this token does not use yet.
        const t = Math.floor(a / K);
        let best = -1, bv = -Infinity;
        for (let e = 0; e < E; e++) {
          if (fill[e]! >= capacity) continue;
          let used = false;
          for (let k = 0; k < K; k++) if (expert[t * K + k] === e) used = true;
          if (used) continue;
          const p = probs[t * E + e]!;
          if (p > bv) { bv = p; best = e; }
        }
        if (best >= 0) {
          expert[a] = best;
          fill[best]!++;
          kept[a] = 1;
          moved++;
          continue;
        }
      }
      dropped++;
    }
  }
  const counts = new Int32Array(E);
  for (let a = 0; a < N * K; a++) if (kept[a]) counts[expert[a]!]!++;
  const start = new Int32Array(E);
  for (let e = 1; e < E; e++) start[e] = start[e - 1]! + counts[e - 1]!;
  const S = N * K - dropped;
  const srcRow = new Int32Array(S);
  const slot = new Int32Array(N * K).fill(-1);
  for (let a = 0; a < N * K; a++) {
    if (!kept[a]) continue;
    const s = start[expert[a]!]!++;
    slot[a] = s;
    srcRow[s] = Math.floor(a / K);
  }
  return { expert, slot, srcRow, counts, chosen, dropped, moved, capacity };
}

/**
 * DeepSeek-V3's auxiliary-loss-free bias update, in its load-error-proportional form:
 * experts above the mean load get less selection score, those below more,
 * b_e += rate · (mean − load_e) / mean (DeepSeek-V3 moves by rate · sign(mean − load_e)).
 * The MoE layer passes rate = model.moe.biasRate × the routers' token spread (tokenSpread).
 * Why not the sign step: the load error of a collapsed router is large (up to E/K − 1) and
 * is corrected in proportion, while near balance the step shrinks instead of flipping tokens
 * back and forth; in simulations of a drifting router it balanced in every case the sign
 * step did and in some it did not.
 */
export function updateRoutingBias(bias: Float32Array, load: ArrayLike<number>, rate: number): void {
  let mean = 0;
  for (let e = 0; e < bias.length; e++) mean += load[e]!;
  mean /= bias.length;
  if (!(mean > 0)) return;
  for (let e = 0; e < bias.length; e++) bias[e]! += (rate * (mean - load[e]!)) / mean;
}

/**
 * Mean over experts of the standard deviation over tokens of that expert's probability:
 * the scale on which a selection bias moves tokens between experts. (The per-token spread
 * over experts is the wrong scale: early in training it is dominated by a common preference
 * shared by all tokens, so a step sized by it moves every token at once and the load flips
 * from one expert to another instead of settling.)
 */
export function tokenSpread(probs: ArrayLike<number>, N: number, E: number): number {
  const s = new Float64Array(E), q = new Float64Array(E);
  for (let t = 0; t < N; t++) {
    for (let e = 0; e < E; e++) { const p = probs[t * E + e]!; s[e]! += p; q[e]! += p * p; }
  }
  return spreadFromSums(s, q, N);
}

/** tokenSpread from per-expert Σp and Σp² over N tokens (sums add across ranks and micro-batches). */
export function spreadFromSums(sum: ArrayLike<number>, sumSq: ArrayLike<number>, N: number): number {
  if (!(N > 0)) return 0;
  let acc = 0;
  for (let e = 0; e < sum.length; e++) {
    const m = sum[e]! / N;
    acc += Math.sqrt(Math.max(0, sumSq[e]! / N - m * m));
  }
  return acc / sum.length;
}
