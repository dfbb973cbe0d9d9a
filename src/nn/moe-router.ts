// Routing decisions of an MoE layer: top-k selection, capacity, token dropping and SWIPE
// reassignment, and the permutation that groups assignments by expert. Integer work over
// (tokens × experts) only; the hidden dim is never touched here (ops/moe.ts moves rows).
//
// Capacity is per routing group (one sequence of T tokens), as in GShard: which tokens
// are dropped then does not depend on how a batch is split over data-parallel or
// expert-parallel ranks, so parallel runs drop exactly the tokens a single process does.
import { fitCapacityOffsets } from './moe-reroute.js';
import { selectBest } from './moe-select.js';

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
  /**
   * Before capacity, lower the selection scores of each group's over-capacity experts until
   * the group fits (moe-reroute.ts; model.moe.overflow = reroute). Needs capacityFactor > 0.
   */
  reroute?: boolean;
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
  /** The router's choices (probs + bias, before reroute and capacity), per group and expert: groups × E. */
  chosen: Int32Array;
  dropped: number;
  /** Assignments moved to an expert the router did not pick (by reroute, then by SWIPE). */
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
  const picked = new Uint8Array(E);
  // top-K of probs + bias (+ off); ties go to the lower expert index (deterministic).
  const select = (t: number, off: Float64Array | null) => {
    for (let e = 0; e < E; e++) score[e] = probs[t * E + e]! + (o.bias ? o.bias[e]! : 0) + (off ? off[e]! : 0);
    for (let k = 0; k < K; k++) {
      let best = -1, bv = -Infinity;
      for (let e = 0; e < E; e++) {
        if (score[e]! > bv) { bv = score[e]!; best = e; }
      }
      expert[t * K + k] = best;
      score[best] = -Infinity;
    }
  };
  for (let g = 0; g < groups; g++) {
    for (let t = g * Tg; t < (g + 1) * Tg; t++) {
      select(t, null);
      for (let k = 0; k < K; k++) chosen[g * E + expert[t * K + k]!]!++;
    }
    if (o.reroute && Number.isFinite(capacity)) {
      const off = fitCapacityOffsets(probs, g * Tg, Tg, E, K, o.bias, capacity);
      if (off.some((v) => v !== 0)) {
        for (let t = g * Tg; t < (g + 1) * Tg; t++) {
          picked.fill(0);
          for (let k = 0; k < K; k++) picked[expert[t * K + k]!] = 1;
          select(t, off);
          for (let k = 0; k < K; k++) if (!picked[expert[t * K + k]!]) moved++;
        }
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

// ---- balance = bias: DeepSeek-V3's auxiliary-loss-free balancing ----
//
// A per-expert bias b_e is added to the router scores for top-K SELECTION only (the combine
// weights stay the router's probabilities) and moved after every optimizer step against the
// step's load. DeepSeek-V3 moves it by a fixed γ·sign(mean − load_e); in a small model the
// right step size changes by orders of magnitude during training (the gap between an expert's
// score and the K-th best score of a token is ~1e-3 at initialization and ~1e-1 later), and the
// router's tokens are so alike that a step larger than their spread moves them all at once
// (the load flips between experts) while a smaller one cannot follow the router's drift.
//
// So the step is measured instead of guessed: for every expert we histogram, over the
// step's tokens, how far its bias would have to move for it to lose each token it was chosen
// by (selection margin: its score minus the best unchosen score) or to win each token it was
// not chosen by (gap: the K-th best score minus its score). The count of an expert, with the
// other biases fixed, is then a known monotone function of its own bias change, and δ_e is the
// change that brings it to the mean load. b_e moves by biasRate·δ_e (the overloaded experts'
// tokens go to the underloaded ones that are moving toward them at the same time, so
// biasRate 1 would roughly double-count; 0.5 meets in the middle). The histograms have fixed
// bins and integer counts, so they are summed exactly over data-parallel ranks and every
// rank computes the same biases.

/** Histogram bins of selection margins: bin 0 = [0, MIN), bin i = [MIN·R^(i−1), MIN·R^i), the last open-ended. */
export const MARGIN_BINS = 42;
const MARGIN_MIN = 2 ** -20;
const MARGIN_RATIO = Math.SQRT2;
const LOG_RATIO = Math.log(MARGIN_RATIO);

/** The histogram bin of a margin m ≥ 0. */
export function marginBin(m: number): number {
  if (!(m >= MARGIN_MIN)) return 0;
  return Math.min(MARGIN_BINS - 1, 1 + Math.floor(Math.log(m / MARGIN_MIN) / LOG_RATIO));
}

/** [lo, hi) of bin i (the last bin, open-ended, is taken as one ratio wide). */
function binRange(i: number): [number, number] {
  if (i === 0) return [0, MARGIN_MIN];
  const lo = MARGIN_MIN * MARGIN_RATIO ** (i - 1);
  return [lo, lo * MARGIN_RATIO];
}

/** Histogram layout: E × 2 × MARGIN_BINS, [e][0] margins of tokens e was chosen by, [e][1] gaps of the others. */
export function marginHistogramSize(E: number): number {
  return E * 2 * MARGIN_BINS;
}

/**
 * Adds the selection margins of N tokens (probs (N, E) row-major, scores probs + bias as in
 * routeTokens) to `hist` (marginHistogramSize(E) counts).
 */
export function addSelectionMargins(probs: ArrayLike<number>, N: number, E: number, K: number, bias: ArrayLike<number> | null, hist: Float64Array | Int32Array): void {
  if (K >= E) return; // every expert takes every token: nothing to balance
  const score = new Float64Array(E);
  const order = new Int32Array(E);
  for (let t = 0; t < N; t++) {
    for (let e = 0; e < E; e++) { score[e] = probs[t * E + e]! + (bias ? bias[e]! : 0); order[e] = e; }
    selectBest(score, order, K + 1);
    const vK = score[order[K - 1]!]!, vK1 = score[order[K]!]!;
    for (let r = 0; r < E; r++) {
      const e = order[r]!;
      if (r < K) hist[(e * 2) * MARGIN_BINS + marginBin(score[e]! - vK1)]!++;
      else hist[(e * 2 + 1) * MARGIN_BINS + marginBin(vK - score[e]!)]!++;
    }
  }
}

/**
 * δ_e per expert: the bias change that, with the other biases fixed, would bring expert e's
 * count (routed[e], first choices before capacity) to the mean, read off the margin
 * histogram (linear inside a bin). Negative for overloaded experts.
 */
export function balancingOffsets(hist: ArrayLike<number>, routed: ArrayLike<number>, E: number): Float64Array {
  let total = 0;
  for (let e = 0; e < E; e++) total += routed[e]!;
  const mean = total / E;
  const d = new Float64Array(E);
  for (let e = 0; e < E; e++) {
    const excess = routed[e]! - mean;
    if (excess === 0) continue;
    const base = (e * 2 + (excess > 0 ? 0 : 1)) * MARGIN_BINS;
    const need = Math.abs(excess);
    let acc = 0, x = binRange(MARGIN_BINS - 1)[1];
    for (let i = 0; i < MARGIN_BINS; i++) {
      const c = hist[base + i]!;
      if (c > 0 && acc + c >= need) {
        const [lo, hi] = binRange(i);
        x = lo + ((hi - lo) * (need - acc)) / c;
        break;
      }
      acc += c;
    }
    d[e] = excess > 0 ? -x : x;
  }
  return d;
}

/**
 * The bias update after a step: b_e += rate·δ_e (balancingOffsets), then the biases are
 * re-centred to mean 0 (a shift common to all experts changes no selection; this keeps them
 * bounded). Deterministic in its inputs, so ranks that sum the same histograms agree.
 */
export function updateRoutingBias(bias: Float32Array, routed: ArrayLike<number>, hist: ArrayLike<number>, rate: number): void {
  const E = bias.length;
  const d = balancingOffsets(hist, routed, E);
  const next = new Float64Array(E);
  let m = 0;
  for (let e = 0; e < E; e++) { next[e] = bias[e]! + rate * d[e]!; m += next[e]!; }
  m /= E;
  for (let e = 0; e < E; e++) bias[e] = next[e]! - m;
}
