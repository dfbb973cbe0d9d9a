// Mixture-of-experts MLP (Switch / GShard / DeepSeek-MoE style), plain single-process
// code. Per forward:
//   router logits = x W_r^T in float32 (float64 stays float64; lower precisions are cast
//   up so routing never runs in bf16) → softmax → top-K (+ optional selection bias) →
//   capacity / dropping / SWIPE (moe-router.ts) → tokens permuted into expert-grouped
//   rows (moeDispatch) → every expert's MLP as grouped GEMMs over its contiguous block →
//   weighted un-permutation (moeCombine) [+ shared expert].
// Expert parallelism (src/parallel/expert-parallel.ts) replaces only the middle step
// through `expertRunner`, exchanging the grouped rows with all-to-all-v.
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../core/tensor.js';
import type { Rng } from '../core/rng.js';
import { isGradEnabled } from '../autograd/tape.js';
import { Module, parameter, type InitContext } from './module.js';
import { Linear } from './layers.js';
import {
  add, cast, div, dropout, gather, gelu, linear, logSoftmax, mean, mul, reshape, scale, slice, softmax, sub, sum,
} from '../ops/index.js';
import { groupedMatmul, moeCombine, moeDispatch } from '../ops/moe.js';
import { type MoeConfig, expertFF, groupCapacity } from './moe-config.js';
import { addSelectionMargins, marginHistogramSize, routeTokens, updateRoutingBias, type Routing } from './moe-router.js';
import { isMeta } from '../ops/meta.js';
import { moeForwardMeta } from './moe-meta.js';

/** G independent linear layers (G, out, in) + (G, out), applied to row blocks by groupedMatmul. */
export class GroupedLinear extends Module {
  constructor(ctx: InitContext, readonly groups: number, readonly inFeatures: number, readonly outFeatures: number, std = 0.02) {
    super();
    this.param('weight', parameter(ctx, [groups, outFeatures, inFeatures], { kind: 'normal', std }));
    this.param('bias', parameter(ctx, [groups, outFeatures], { kind: 'const', value: 0 }));
  }
  get weight(): Tensor { return this.getParam('weight'); }
  get bias(): Tensor { return this.getParam('bias'); }
  forward(x: Tensor, counts: Int32Array): Tensor {
    return groupedMatmul(x, this.weight, this.bias, counts);
  }
}

/** The experts of one layer: GELU MLPs, rows grouped by expert. */
export class Experts extends Module {
  readonly c_fc: GroupedLinear;
  readonly c_proj: GroupedLinear;
  constructor(ctx: InitContext, E: number, C: number, F: number, projStd: number) {
    super();
    this.c_fc = this.child('c_fc', new GroupedLinear(ctx, E, C, F));
    this.c_proj = this.child('c_proj', new GroupedLinear(ctx, E, F, C, projStd));
  }
  /** Experts held here (all of them, or this rank's shard under expert parallelism). */
  get count(): number { return this.c_fc.weight.shape[0]!; }
  /** x (S, C) grouped by expert with counts[e] rows each → (S, C). */
  forward(x: Tensor, counts: Int32Array): Tensor {
    return this.c_proj.forward(gelu(this.c_fc.forward(x, counts)), counts);
  }
}

class SharedExpert extends Module {
  readonly c_fc: Linear;
  readonly c_proj: Linear;
  constructor(ctx: InitContext, C: number, F: number, projStd: number) {
    super();
    this.c_fc = this.child('c_fc', new Linear(ctx, C, F));
    this.c_proj = this.child('c_proj', new Linear(ctx, F, C, { std: projStd }));
  }
  forward(x: Tensor): Tensor {
    return this.c_proj.forward(gelu(this.c_fc.forward(x)));
  }
}

/** Routing statistics accumulated over training forwards until read (per layer). */
export interface MoeStats {
  /** Training forwards recorded. */
  forwards: number;
  tokens: number;
  assignments: number;
  dropped: number;
  moved: number;
  /** Rows each expert computed (after capacity). */
  load: Float64Array;
  /** Router first choices per expert (before capacity): what the bias update balances. */
  routed: Float64Array;
  entropySum: number;
  /**
   * balance = bias only: per-expert histograms of the tokens' selection margins
   * (moe-router.ts addSelectionMargins), integer counts that add across ranks and micro-batches.
   */
  margins: Float64Array;
  auxLoss: number;
  zLoss: number;
}

function emptyStats(E: number, bias: boolean): MoeStats {
  return { forwards: 0, tokens: 0, assignments: 0, dropped: 0, moved: 0, load: new Float64Array(E), routed: new Float64Array(E), entropySum: 0, margins: new Float64Array(bias ? marginHistogramSize(E) : 0), auxLoss: 0, zLoss: 0 };
}

/**
 * Replaces the local expert computation (expert parallelism); `local` runs this rank's
 * experts; `maxPerExpert` bounds the rows any one expert takes from this forward (capacity
 * mode; Infinity when dropless).
 */
export type ExpertRunner = (xp: Tensor, counts: Int32Array, local: (x: Tensor, counts: Int32Array) => Tensor, maxPerExpert: number) => Tensor;

export class MoeMlp extends Module {
  readonly router: Linear;
  readonly experts: Experts;
  readonly shared: SharedExpert | null;
  /** Selection bias of balance = bias (state, not a parameter: no gradient). */
  readonly routingBias: Float32Array | null;
  /** Auxiliary losses (balance + z-loss) of the last training forward, already weighted. */
  auxLoss: Tensor | null = null;
  expertRunner: ExpertRunner | null = null;
  stats: MoeStats;

  constructor(ctx: InitContext, readonly cfg: MoeConfig, readonly dModel: number, dFF: number, nLayer: number, readonly dropoutP: number) {
    super();
    const E = cfg.experts, F = expertFF(cfg, dFF), projStd = 0.02 / Math.sqrt(2 * nLayer);
    this.router = this.child('router', new Linear(ctx, dModel, E, { bias: false }));
    this.experts = this.child('experts', new Experts(ctx, E, dModel, F, projStd));
    this.shared = cfg.sharedExpert ? this.child('shared', new SharedExpert(ctx, dModel, F, projStd)) : null;
    this.routingBias = cfg.balance === 'bias' ? new Float32Array(E) : null;
    this.stats = emptyStats(E, this.routingBias !== null);
  }

  /** x (B, T, C) → (B, T, C). Each sequence is one routing group. */
  forward(x: Tensor, rng: Rng): Tensor {
    // Meta branch (the planner's trace): balanced routing, see moe-meta.ts.
    if (isMeta(x)) return moeForwardMeta(this, x, rng);
    const [B, T, C] = x.shape as [number, number, number];
    const N = B * T, E = this.cfg.experts, K = this.cfg.topK;
    const x2 = reshape(x, [N, C]);
    const hi = x.dtype === 'float32' || x.dtype === 'float64' ? x.dtype : 'float32';
    const xr = hi === x.dtype ? x2 : cast(x2, hi);
    const wr = this.router.weight.dtype === hi ? this.router.weight : cast(this.router.weight, hi);
    const logits = linear(xr, wr);
    const probs = softmax(logits);
    const pd = (probs.data as Float32Array | Float64Array).subarray(probs.offset, probs.offset + N * E);
    const r = routeTokens(pd, {
      groups: B, groupSize: T, experts: E, topK: K, capacityFactor: this.cfg.capacityFactor,
      swipe: this.cfg.balance === 'swipe', bias: this.routingBias, reroute: this.cfg.overflow === 'reroute',
    });
    let gate = gather(probs, fromStorage(r.expert, [N, K], 'int32'), 1);
    if (K > 1) gate = div(gate, sum(gate, [1], true)); // GShard: the K gates sum to 1
    if (gate.dtype !== x.dtype) gate = cast(gate, x.dtype);
    // Held at the most rows routing can dispatch (N·K, or every expert's capacity of every
    // group when that is fewer; zero padding past the dispatched rows) so that with dropped
    // assignments the buffers sized by them keep one size from step to step (pool hits).
    const xp = moeDispatch(x2, r.srcRow, Math.min(N * K, B * E * groupCapacity(this.cfg, T)));
    const local = (rows: Tensor, counts: Int32Array) => this.experts.forward(rows, counts);
    const yp = this.expertRunner ? this.expertRunner(xp, r.counts, local, B * groupCapacity(this.cfg, T)) : local(xp, r.counts);
    let out = moeCombine(yp, gate, r.slot);
    if (this.shared) out = add(out, this.shared.forward(x2));
    if (this.dropoutP > 0) out = dropout(out, this.dropoutP, { rng, training: this.training });

    // Auxiliary losses whenever training (also under noGrad, so a loss value is the same
    // with and without the tape); statistics only from forwards that will be trained on.
    this.auxLoss = null;
    if (this.training) {
      let aux: Tensor | null = null;
      let auxV = 0, zV = 0;
      if (this.cfg.balance === 'aux' && this.cfg.auxLossCoef > 0) {
        // Switch: E · Σ_e f_e · P_e per sequence, averaged over sequences (so it is the
        // same sum whichever ranks hold which sequences).
        const f = new Float64Array(B * E);
        for (let i = 0; i < B * E; i++) f[i] = r.chosen[i]! / (T * K);
        const fT = fromStorage(hi === 'float64' ? f : Float32Array.from(f), [B, E], hi);
        const P = mean(reshape(probs, [B, T, E]), [1]);
        aux = scale(sum(mul(P, fT)), (this.cfg.auxLossCoef * E) / B);
        auxV = aux.item();
      }
      if (this.cfg.zLossCoef > 0) {
        // ST-MoE router z-loss: mean log-sum-exp², with lse = logit − logSoftmax (column 0).
        const lse = sub(slice(logits, 1, 0, 1), slice(logSoftmax(logits), 1, 0, 1));
        const z = scale(mean(mul(lse, lse)), this.cfg.zLossCoef);
        zV = z.item();
        aux = aux ? add(aux, z) : z;
      }
      this.auxLoss = aux && aux.dtype !== x.dtype ? cast(aux, x.dtype) : aux;
      if (isGradEnabled()) this.record(r, pd, N, auxV, zV);
    }
    return reshape(out, [B, T, C]);
  }

  private record(r: Routing, pd: ArrayLike<number>, N: number, auxV: number, zV: number): void {
    const E = this.cfg.experts, K = this.cfg.topK, B = r.chosen.length / E;
    const s = this.stats;
    s.forwards++;
    s.tokens += N;
    s.assignments += N * K;
    s.dropped += r.dropped;
    s.moved += r.moved;
    for (let e = 0; e < E; e++) {
      s.load[e]! += r.counts[e]!;
      for (let g = 0; g < B; g++) s.routed[e]! += r.chosen[g * E + e]!;
    }
    let ent = 0;
    for (let i = 0; i < N * E; i++) { const p = pd[i]!; if (p > 0) ent -= p * Math.log(p); }
    s.entropySum += ent;
    if (this.routingBias) addSelectionMargins(pd, N, E, K, this.routingBias, s.margins);
    s.auxLoss += auxV;
    s.zLoss += zV;
  }

  /** Statistics since the last call (and resets them). */
  takeStats(): MoeStats {
    const s = this.stats;
    this.stats = emptyStats(this.cfg.experts, this.routingBias !== null);
    return s;
  }

  /**
   * balance = bias: moves the selection biases toward the offsets that would have balanced
   * `routed` (chosen counts per expert) given `margins` (the selection-margin histograms),
   * by biasRate of the way (moe-router.ts updateRoutingBias). Both are summed over
   * data-parallel ranks by the caller, so every rank stays identical.
   */
  updateBias(routed: ArrayLike<number>, margins: ArrayLike<number>): void {
    if (this.routingBias) updateRoutingBias(this.routingBias, routed, margins, this.cfg.biasRate);
  }
}
