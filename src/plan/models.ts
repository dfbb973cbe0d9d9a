// The models the planner traces, each built by its own code on the meta device.
import { metaTensor } from '../core/tensor.js';
import { GPT } from '../nn/gpt.js';
import { gptStagePartition } from '../parallel/plans/gpt-pipeline.js';
import type { GptConfig } from '../nn/gpt-config.js';
import { DLRM, bceWithLogits, type DlrmConfig } from '../recsys/dlrm.js';
import { traceStep, type TraceResult } from './trace.js';
import { withPrecision } from '../backend/precision.js';
import { tracesRecompute } from './estimate.js';
import type { Layout } from './layout.js';
import type { ClusterSpec } from './cluster.js';

/**
 * The trace a layout needs: recomputation as the layout (or Athanor's ZeRO-3) implies, and
 * for Athanor's own runtime (allocator athanor-pool) its mixed precision as it runs.
 * Elsewhere the fp32 trace is scaled by the layout's element size (16-bit activations).
 */
export function traceForLayout(cfg: GptConfig, l: Layout, allocator?: ClusterSpec['allocator']): TraceResult {
  return traceGpt(cfg, { microBatch: l.mb, recompute: tracesRecompute(l, allocator), precision: allocator === 'athanor-pool' ? l.precision : 'fp32' });
}

/** One micro-step of a GPT (any preset or config) with `microBatch` sequences of `seqLen` tokens. */
export function traceGpt(cfg: GptConfig, o: { microBatch: number; seqLen?: number; recompute?: boolean; precision?: 'fp32' | 'bf16' }): TraceResult {
  // Mixed precision changes what Athanor's ops allocate (16-bit casts, 16-bit attention
  // probabilities): trace under it when asked (see traceForLayout).
  if (o.precision === 'bf16') return withPrecision('bf16', () => traceGpt(cfg, { ...o, precision: 'fp32' }));
  // MoE layers take their meta branch (nn/moe-meta.ts): balanced routing, capacity respected.
  const model = new GPT(cfg, { device: 'meta', recompute: o.recompute ?? false });
  const B = o.microBatch, T = o.seqLen ?? cfg.seqLen;
  const x = metaTensor([B, T], 'int32'), y = metaTensor([B, T], 'int32');
  const tr = traceStep(model, () => model.loss(x, y), { nBlocks: cfg.nLayer, items: B * T });
  // Pipeline stages as the trainer cuts them (balanced against the embedding and the head).
  tr.stagePartition = (pp, v) => gptStagePartition(cfg, pp, v);
  return tr;
}

/**
 * One micro-step of DLRM's dense part with `batch` samples: the embedding rows arrive
 * from the servers as leaves (one row per sample per field here, as without offsets).
 */
export function traceDlrm(cfg: DlrmConfig, o: { batch: number }): TraceResult {
  const model = new DLRM({ ...cfg, device: 'meta' });
  const B = o.batch, D = cfg.embDim;
  const dense = metaTensor([B, cfg.numDense], 'float32');
  const emb = Array.from({ length: cfg.numSparse }, () => { const t = metaTensor([B, D], 'float32'); t.requiresGrad = true; return t; });
  return traceStep(model, () => bceWithLogits(model.forward(dense, emb), new Float32Array(B)), { nBlocks: 0, items: B });
}
