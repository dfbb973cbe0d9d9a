// Optimizer state and parameters as checkpoint segments (flat element ranges of named
// logical tensors), so any layout (full, ZeRO shards, tensor-parallel shards) saves and
// loads the same names. Shared by the trainer and the parallel transforms.
import type { Tensor } from '../core/tensor.js';
import type { Segment } from '../io/checkpoint.js';
import type { Storage } from '../core/dtype.js';
import type { AdamW } from './adamw.js';
import type { OptimizerStateDict } from './optimizer.js';

/** What loading needs from a checkpoint (a CheckpointReader, or a view that maps local to global ranges). */
export interface RangeSource {
  readonly dir: string;
  has(name: string): boolean;
  entry(name: string): { shape: number[] };
  readRange(name: string, start: number, end: number, out?: Storage): Storage;
}

export interface OptimizerMeta { stepCount: number; slotSteps: Record<string, number>; groups: { lr: number }[] }

export function optimizerSegments(opt: AdamW): Segment[] {
  const out: Segment[] = [];
  for (const s of opt.slots()) {
    if (s.step === 0) continue;
    for (const [buf, arr] of Object.entries(s.state)) {
      out.push({ name: `optim.${buf}.${s.name}`, shape: [...s.param.shape], dtype: s.param.dtype, start: s.start, end: s.end, data: arr });
    }
  }
  return out;
}

export function optimizerMeta(opt: AdamW): OptimizerMeta {
  const slotSteps: Record<string, number> = {};
  for (const s of opt.slots()) slotSteps[s.name] = s.step;
  return { stepCount: opt.stepCount, slotSteps, groups: opt.paramGroups.map((g) => ({ lr: g.lr })) };
}

/** Copies each parameter's elements [start, end) (its whole range by default) from the checkpoint. */
export function loadParams(r: RangeSource, named: [string, Tensor][], range?: (name: string, p: Tensor) => [number, number]): void {
  for (const [name, p] of named) {
    const e = r.entry(name);
    const n = e.shape.reduce((a, b) => a * b, 1);
    const [lo, hi] = range ? range(name, p) : [0, n];
    if (!range && (e.shape.length !== p.shape.length || e.shape.some((d, i) => d !== p.shape[i]))) {
      throw new Error(`${r.dir}: '${name}' has shape [${e.shape}] in the checkpoint, the model has [${p.shape}]`);
    }
    r.readRange(name, lo, hi, p.data.subarray(p.offset, p.offset + (hi - lo)));
  }
}

/** Restores AdamW state for whatever ranges this optimizer's slots cover. */
export function loadOptimizer(r: RangeSource, opt: AdamW, meta: OptimizerMeta, offsetOf: (slot: string) => number = () => 0): void {
  const state: OptimizerStateDict['state'] = {};
  for (const s of opt.slots()) {
    // Under ZeRO only rank 0's slots are listed; every slot steps together, so a slot
    // with saved moments but no entry took meta.stepCount steps.
    const step = meta.slotSteps[s.name] ?? (r.has(`optim.exp_avg.${s.name}`) ? meta.stepCount : 0);
    if (step === 0) continue;
    const buffers: Record<string, Float32Array | Float64Array> = {};
    const off = offsetOf(s.name);
    for (const buf of ['exp_avg', 'exp_avg_sq']) buffers[buf] = r.readRange(`optim.${buf}.${s.name}`, off + s.start, off + s.end) as Float32Array;
    state[s.name] = { step, start: s.start, end: s.end, buffers };
  }
  const sd = opt.stateDict();
  opt.loadStateDict({ step: meta.stepCount, groups: sd.groups, state });
  meta.groups.forEach((g, i) => { if (opt.paramGroups[i]) opt.paramGroups[i]!.lr = g.lr; });
}
