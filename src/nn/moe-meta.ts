// The MoE layer on the meta device (src/ops/meta.ts), for the planner. A meta tensor has
// no router probabilities, so routing follows the balanced-load assumption that MoE
// capacity planning uses (GShard, Switch): every routing group (one sequence of T tokens)
// sends T·K/E assignments to each expert, and an expert keeps at most its capacity
// ceil(capacityFactor·T·K/E) of them. The rest of the layer is the real layer's sequence
// of ops (router in fp32, softmax, top-K gates, dispatch, grouped expert GEMMs, combine,
// shared expert, dropout, auxiliary losses) run as meta ops, so parameter and activation
// shapes come from the same code path. Expert parallelism is not applied here: the
// planner shards experts and prices the all-to-all from the layout (src/plan/estimate.ts).
import { metaTensor, type Tensor } from '../core/tensor.js';
import type { Rng } from '../core/rng.js';
import { add, cast, div, dropout, gather, gelu, linear, logSoftmax, mean, mul, reshape, scale, softmax, sub, sum } from '../ops/index.js';
import { slice } from '../ops/shape.js';
import { groupedMatmulMeta, moeCombineMeta, moeDispatchMeta } from '../ops/meta.js';
import type { MoeConfig } from './moe-config.js';
import type { MoeMlp } from './moe.js';

/**
 * Rows each expert computes for `groups` routing groups of `groupSize` tokens under
 * balanced routing: per group, the T·K assignments spread evenly (the remainder to the
 * lowest experts), each expert capped at its capacity (none when dropless).
 */
export function balancedExpertCounts(m: Pick<MoeConfig, 'experts' | 'topK' | 'capacityFactor'>, groups: number, groupSize: number): Int32Array {
  const E = m.experts, A = groupSize * m.topK;
  const cap = m.capacityFactor > 0 ? Math.ceil((m.capacityFactor * A) / E) : Infinity;
  const base = Math.floor(A / E), rem = A % E;
  const counts = new Int32Array(E);
  for (let e = 0; e < E; e++) counts[e] = groups * Math.min(base + (e < rem ? 1 : 0), cap);
  return counts;
}

/** MoeMlp.forward for a meta x (B, T, C) → (B, T, C); sets layer.auxLoss as the real forward does. */
export function moeForwardMeta(layer: MoeMlp, x: Tensor, rng: Rng): Tensor {
  const cfg = layer.cfg;
  const [B, T, C] = x.shape as [number, number, number];
  const N = B * T, E = cfg.experts, K = cfg.topK;
  const x2 = reshape(x, [N, C]);
  const hi = x.dtype === 'float64' ? 'float64' : 'float32';
  const xr = hi === x.dtype ? x2 : cast(x2, hi);
  const wr = layer.router.weight.dtype === hi ? layer.router.weight : cast(layer.router.weight, hi);
  const logits = linear(xr, wr);
  const probs = softmax(logits);
  const counts = balancedExpertCounts(cfg, B, T);
  const S = counts.reduce((a, c) => a + c, 0);
  let gate = gather(probs, metaTensor([N, K], 'int32'), 1);
  if (K > 1) gate = div(gate, sum(gate, [1], true));
  if (gate.dtype !== x.dtype) gate = cast(gate, x.dtype);
  const xp = moeDispatchMeta(x2, S);
  const ex = layer.experts;
  const h = gelu(groupedMatmulMeta(xp, ex.c_fc.weight, ex.c_fc.bias, counts));
  const yp = groupedMatmulMeta(h, ex.c_proj.weight, ex.c_proj.bias, counts);
  let out = moeCombineMeta(yp, gate);
  if (layer.shared) out = add(out, layer.shared.forward(x2));
  if (layer.dropoutP > 0) out = dropout(out, layer.dropoutP, { rng, training: layer.training });
  layer.auxLoss = null;
  if (layer.training) {
    let aux: Tensor | null = null;
    if (cfg.balance === 'aux' && cfg.auxLossCoef > 0) {
      const P = mean(reshape(probs, [B, T, E]), [1]);
      aux = scale(sum(mul(P, metaTensor([B, E], hi))), (cfg.auxLossCoef * E) / B);
    }
    if (cfg.zLossCoef > 0) {
      const lse = sub(slice(logits, 1, 0, 1), slice(logSoftmax(logits), 1, 0, 1));
      const z = scale(mean(mul(lse, lse)), cfg.zLossCoef);
      aux = aux ? add(aux, z) : z;
    }
    layer.auxLoss = aux && aux.dtype !== x.dtype ? cast(aux, x.dtype) : aux;
  }
  return reshape(out, [B, T, C]);
}
