// Memory a training configuration needs per rank, for `athanor train --dry-run`: the
// model's own code is traced on the meta device (src/plan/), so the plan cannot drift
// from the model; a 13B plan allocates nothing.
import type { TrainConfig } from './config.js';
import { traceForLayout } from '../plan/models.js';
import { estimateMemory, type MemoryEstimate } from '../plan/estimate.js';
import { defaultLayout, type Layout } from '../plan/layout.js';
import type { PipelineSettings } from '../parallel/pipeline/pipeline-setup.js';

export function pipelineSettings(cfg: TrainConfig): PipelineSettings {
  return { pp: cfg.parallel.pp, schedule: cfg.parallel.pipelineSchedule, chunks: cfg.parallel.pipelineChunks, microBatches: cfg.train.gradAccum };
}

export interface MemoryPlan {
  params: number;
  bytes: { weights: number; grads: number; optimizer: number; gather: number; activations: number; other: number; total: number };
  /** The full per-device breakdown (src/plan/estimate.ts). */
  detail: MemoryEstimate;
  notes: string[];
}

/** The planner's layout for a training config (the trainer's parallel and recompute settings). */
export function layoutFromTrainConfig(cfg: TrainConfig): Layout {
  const p = cfg.parallel;
  return {
    ...defaultLayout(), tp: p.tp, pp: p.pp, dp: p.dp, ep: p.ep, zero: p.zero, shardGroup: p.zero === 3 ? p.shardGroup : 0, offload: p.offload === 'disk' ? 'disk' : 'none', precision: cfg.train.precision === 'fp32' ? 'fp32' : 'bf16', recompute: cfg.train.recompute ? 'full' : 'none',
    mb: cfg.train.microBatch, ga: cfg.train.gradAccum,
    // The pipeline schedule decides which micro-batches are in flight; sp splits activations.
    schedule: p.pipelineSchedule, vpp: p.pipelineSchedule === 'interleaved' ? p.pipelineChunks : 1, sp: p.sp, a2a: p.a2a,
  };
}

export function planMemory(cfg: TrainConfig): MemoryPlan {
  const l = layoutFromTrainConfig(cfg);
  // Athanor's own runtime: its buffer pool and data-parallel allocations (src/plan/estimate.ts).
  const tr = traceForLayout(cfg.model, l, 'athanor-pool');
  const m = estimateMemory(tr, l, { seqLen: cfg.model.seqLen, dModel: cfg.model.dModel, allocator: 'athanor-pool' });
  const notes: string[] = [];
  const activations = m.activationsPoolHeld + m.pipelineInFlight;
  notes.push(`activations: ${fmtBytes(m.activations)} live at the peak; the exact-size buffer pool holds ${fmtBytes(m.activationsPoolHeld)}`);
  if (m.pipelineInFlight) notes.push(`pipeline: ${fmtBytes(m.pipelineInFlight)} of saved activations of in-flight micro-batches (stage ${m.stage})`);
  if (m.commBuffers) notes.push(`communication buffers: ${fmtBytes(m.commBuffers)}`);
  if (m.diskOffload) notes.push(`offload=disk: ${fmtBytes(m.diskOffload)} of master weights and AdamW moments in the rank's offload file; memory holds two chunk buffers (${fmtBytes(m.optimizer)})`);
  if (l.shardGroup > 0 && l.shardGroup < l.dp) notes.push(`HSDP: ZeRO-3 sharded over groups of ${l.shardGroup}, replicated over ${l.dp / l.shardGroup} groups`);
  if (cfg.train.recompute) notes.push('activation recomputation: only block inputs are kept');
  return {
    params: tr.numParams,
    bytes: { weights: m.weights, grads: m.grads, optimizer: m.optimizer, gather: m.gatherBuffers, activations, other: m.commBuffers + m.workspace, total: m.total },
    detail: m,
    notes,
  };
}

export function fmtBytes(b: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}
