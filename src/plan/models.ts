// The models the planner traces, each built by its own code on the meta device.
import { metaTensor } from '../core/tensor.js';
import { GPT } from '../nn/gpt.js';
import type { GptConfig } from '../nn/gpt-config.js';
import { DLRM, bceWithLogits, type DlrmConfig } from '../recsys/dlrm.js';
import { traceStep, type TraceResult } from './trace.js';

/** One micro-step of a GPT (any preset or config) with `microBatch` sequences of `seqLen` tokens. */
export function traceGpt(cfg: GptConfig, o: { microBatch: number; seqLen?: number; recompute?: boolean }): TraceResult {
  // MoE layers take their meta branch (nn/moe-meta.ts): balanced routing, capacity respected.
  const model = new GPT(cfg, { device: 'meta', recompute: o.recompute ?? false });
  const B = o.microBatch, T = o.seqLen ?? cfg.seqLen;
  const x = metaTensor([B, T], 'int32'), y = metaTensor([B, T], 'int32');
  return traceStep(model, () => model.loss(x, y), { nBlocks: cfg.nLayer, items: B * T });
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
