// Training checkpoints on top of io/checkpoint.ts: model weights, AdamW state (per
// parameter range, so ZeRO shards save and load in any layout), and the JSON state
// that makes a resumed run continue exactly (step, RNG, loader position, config).
import { markWeightsUpdated } from '../backend/lowp-tensor.js';
import { join } from 'node:path';
import type { Tensor } from '../core/tensor.js';
import type { AdamW, OptimizerStateDict } from '../optim/index.js';
import { GPT } from '../nn/gpt.js';
import { BpeTokenizer } from '../text/index.js';
import {
  beginCheckpoint, writeRankShard, commitCheckpoint, latestCheckpoint as latestIn, CheckpointReader, type Segment,
} from '../io/checkpoint.js';
import type { TrainConfig } from './config.js';
import type { TrainOptimizer } from './optim-setup.js';
import { nameParameters } from './optim-setup.js';
import type { Module } from '../nn/module.js';

export interface TrainState {
  step: number;
  loader: unknown;
  modelRng: number[];
  config: TrainConfig;
  optimizer?: { stepCount: number; slotSteps: Record<string, number>; groups: { lr: number }[] };
  /** fp16 dynamic loss scale (train.precision = fp16). */
  lossScaler?: { scale: number; goodSteps: number };
}

export interface CheckpointComm {
  rank: number;
  world: number;
  barrier(): Promise<void>;
}

const single: CheckpointComm = { rank: 0, world: 1, barrier: async () => undefined };

export function paramSegments(model: Module): Segment[] {
  return model.namedParameters().map(([name, p]) => fullSegment(name, p));
}

function fullSegment(name: string, p: Tensor): Segment {
  if (!p.isContiguous()) throw new Error(`checkpoint: parameter ${name} is not contiguous`);
  return { name, shape: [...p.shape], dtype: p.dtype, start: 0, end: p.size, data: p.data.subarray(p.offset, p.offset + p.size) };
}

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

export function optimizerMeta(opt: AdamW): NonNullable<TrainState['optimizer']> {
  const slotSteps: Record<string, number> = {};
  for (const s of opt.slots()) slotSteps[s.name] = s.step;
  return { stepCount: opt.stepCount, slotSteps, groups: opt.paramGroups.map((g) => ({ lr: g.lr })) };
}

/**
 * Saves a checkpoint; every rank calls it with the segments it owns (`params`
 * defaults to all parameters on rank 0 and none elsewhere).
 */
export async function saveCheckpoint(root: string, state: TrainState, segments: Segment[], comm: CheckpointComm = single): Promise<string> {
  if (comm.rank === 0) beginCheckpoint(root, state.step);
  await comm.barrier();
  writeRankShard(root, state.step, comm.rank, segments);
  await comm.barrier();
  let dir = '';
  if (comm.rank === 0) dir = commitCheckpoint(root, state.step, comm.world, state);
  await comm.barrier();
  return dir || join(root, `step-${String(state.step).padStart(8, '0')}`);
}

/** Single-process save of model + optimizer + state. */
export function saveTrainCheckpoint(root: string, model: Module, optim: TrainOptimizer, state: TrainState): Promise<string> {
  const st: TrainState = { ...state, optimizer: optimizerMeta(optim.adamw) };
  return saveCheckpoint(root, st, [...paramSegments(model), ...optimizerSegments(optim.adamw)]);
}

/** Copies each parameter's elements [start, end) (its whole range by default) from the checkpoint. */
export function loadParams(r: CheckpointReader, named: [string, Tensor][], range?: (name: string, p: Tensor) => [number, number]): void {
  for (const [name, p] of named) {
    const e = r.entry(name);
    const n = e.shape.reduce((a, b) => a * b, 1);
    const [lo, hi] = range ? range(name, p) : [0, n];
    if (!range && (e.shape.length !== p.shape.length || e.shape.some((d, i) => d !== p.shape[i]))) {
      throw new Error(`${r.dir}: '${name}' has shape [${e.shape}] in the checkpoint, the model has [${p.shape}]`);
    }
    r.readRange(name, lo, hi, p.data.subarray(p.offset, p.offset + (hi - lo)));
  }
  markWeightsUpdated();
}

/** Restores AdamW state for whatever ranges this optimizer's slots cover. */
export function loadOptimizer(r: CheckpointReader, opt: AdamW, meta: NonNullable<TrainState['optimizer']>, offsetOf: (slot: string) => number = () => 0): void {
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

export function loadTrainCheckpoint(dir: string, model: Module, optim: TrainOptimizer): TrainState {
  const r = new CheckpointReader(dir);
  try {
    const st = r.state as TrainState;
    loadParams(r, nameParameters(model));
    if (st.optimizer) loadOptimizer(r, optim.adamw, st.optimizer);
    return st;
  } finally {
    r.close();
  }
}

export function latestCheckpoint(root: string): string | null {
  return latestIn(root);
}

/** Loads the newest checkpoint of a run directory for generation or evaluation. */
export function loadForInference(runDir: string, tokenizerPath?: string): { model: GPT; config: TrainConfig; tokenizer: BpeTokenizer; checkpoint: string } {
  const dir = latestIn(join(runDir, 'checkpoints')) ?? latestIn(runDir);
  if (!dir) throw new Error(`${runDir}: no checkpoint found (expected ${join(runDir, 'checkpoints', 'latest')}); train first with \`athanor train --train.outDir=${runDir}\``);
  const r = new CheckpointReader(dir);
  try {
    const st = r.state as TrainState;
    const model = new GPT(st.config.model, { seed: st.config.train.seed });
    loadParams(r, nameParameters(model));
    const tokPath = tokenizerPath ?? join(st.config.data.dir, 'tokenizer.json');
    const tokenizer = BpeTokenizer.load(tokPath);
    return { model, config: st.config, tokenizer, checkpoint: dir };
  } finally {
    r.close();
  }
}
