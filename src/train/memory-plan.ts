// Memory a training configuration needs per rank, computed from shapes only (the
// model is built on the meta device, so a 13B plan costs nothing to make).
import type { TrainConfig } from './config.js';
import { simulate } from '../parallel/pipeline/schedule.js';
import { pipelineShape, type PipelineSettings } from '../parallel/pipeline/pipeline-setup.js';

export function pipelineSettings(cfg: TrainConfig): PipelineSettings {
  return { pp: cfg.parallel.pp, schedule: cfg.parallel.pipelineSchedule, chunks: cfg.parallel.pipelineChunks, microBatches: cfg.train.gradAccum };
}

function pipelineChunksOf(cfg: TrainConfig): number {
  return cfg.parallel.pp > 1 && cfg.parallel.pipelineSchedule === 'interleaved' ? cfg.parallel.pipelineChunks : 1;
}

export interface MemoryPlan {
  params: number;
  bytes: { weights: number; grads: number; optimizer: number; activations: number; total: number };
  notes: string[];
}

/**
 * Activations saved for backward per block, in float32 elements per token (matches
 * src/nn/gpt.ts): ln_1 in/out, qkv, attention probabilities (H·T per token), attention
 * out, proj in, residual, ln_2 in/out, fc out, GELU out. With recomputation only the
 * block input is kept, plus one block's worth live during its backward.
 */
export function activationElementsPerToken(cfg: TrainConfig): number {
  const C = cfg.model.dModel, F = cfg.model.dFF, H = cfg.model.nHead, T = cfg.model.seqLen;
  const tp = cfg.parallel.tp;
  const perBlock = 2 * C + (3 * C) / tp + (H / tp) * T + C / tp + 2 * C + 2 * C + (2 * F) / tp;
  const L = Math.ceil(cfg.model.nLayer / (cfg.parallel.pp * pipelineChunksOf(cfg)));
  const head = C + 2 * cfg.model.vocabSize / tp; // ln_f out, logits and their softmax in CE
  return cfg.train.recompute ? L * C + perBlock + head : L * perBlock + head;
}

export function planMemory(cfg: TrainConfig, params: number): MemoryPlan {
  const { dp, tp, pp, zero } = cfg.parallel;
  const shardModel = tp * pp; // each rank holds 1/(tp·pp) of the weights
  const local = params / shardModel;
  const notes: string[] = [];
  const w = 4 * local * (zero >= 3 ? 1 / dp : 1);
  const g = 4 * local * (zero >= 2 ? 1 / dp : 1);
  const o = 8 * local * (zero >= 1 ? 1 / dp : 1); // AdamW m and v in float32
  const tokens = cfg.train.microBatch * cfg.model.seqLen;
  // Micro-batch chunks whose activations a pipeline rank holds at once, from the schedule
  // itself (GPipe: all m; 1F1B: at most pp; interleaved: in between).
  const inflight = pp > 1 ? Math.max(...simulate(pipelineShape(pipelineSettings(cfg))).peakInFlight) : 1;
  const a = 4 * tokens * activationElementsPerToken(cfg) * inflight;
  if (zero >= 3) notes.push('ZeRO-3: one block of full parameters is gathered at a time (+' + fmtBytes((4 * local) / Math.max(1, cfg.model.nLayer)) + ' transient)');
  if (cfg.train.recompute) notes.push('activation recomputation: only block inputs are kept');
  return { params, bytes: { weights: w, grads: g, optimizer: o, activations: a, total: w + g + o + a }, notes };
}

export function fmtBytes(b: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}
