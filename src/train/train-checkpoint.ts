// Training checkpoints on top of io/checkpoint.ts: model weights, AdamW state (per
// parameter range, so ZeRO shards save and load in any layout), and the JSON state
// that makes a resumed run continue exactly (step, RNG, loader position, config).
import { markWeightsUpdated } from '../backend/lowp-tensor.js';
import { join } from 'node:path';
import type { Tensor } from '../core/tensor.js';
import { optimizerSegments, optimizerMeta, loadParams, loadOptimizer, type OptimizerMeta } from '../optim/state-segments.js';
import { GPT } from '../nn/gpt.js';
import { BpeTokenizer } from '../text/index.js';
import {
  beginCheckpoint, writeRankShard, commitCheckpoint, latestCheckpoint as latestIn, CheckpointReader, findIntactCheckpoint, type Segment,
} from '../io/checkpoint.js';
import type { TrainConfig } from './config.js';
import type { TrainOptimizer } from './optim-setup.js';
import { nameParameters } from './optim-setup.js';
import { restoreMoeCheckpointState } from './moe-step.js';
import type { Module } from '../nn/module.js';

export { optimizerSegments, optimizerMeta, loadParams, loadOptimizer };

export interface TrainState {
  step: number;
  loader: unknown;
  modelRng: number[];
  config: TrainConfig;
  optimizer?: OptimizerMeta;
  /** fp16 dynamic loss scale (train.precision = fp16). */
  lossScaler?: { scale: number; goodSteps: number };
  /** Routing biases of model.moe.balance = bias, per MoE layer (train/moe-step.ts). */
  moeBias?: number[][];
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

/**
 * The checkpoint `--resume` continues from: the newest one whose every file matches
 * its manifest's checksums (`latest` first, then older ones). Damaged ones are skipped
 * with a loud warning — by default on stderr from rank 0 only: every rank verifies the
 * same files and so picks the same checkpoint. If all are damaged this throws rather
 * than train on corrupted weights.
 */
export function latestCheckpoint(root: string, warn: (msg: string) => void = warnOnRankZero): string | null {
  return findIntactCheckpoint(root, warn);
}

function warnOnRankZero(msg: string): void {
  const rank = process.env.ATHANOR_RANK ?? process.env.RANK ?? process.env.OMPI_COMM_WORLD_RANK ?? '0';
  if (rank === '0') process.stderr.write(`athanor: ${msg}\n`);
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
    // balance = bias: the routing biases are part of the model's routing, not only of training
    restoreMoeCheckpointState(model, st.moeBias, dir);
    const tokPath = tokenizerPath ?? join(st.config.data.dir, 'tokenizer.json');
    const tokenizer = BpeTokenizer.load(tokPath);
    return { model, config: st.config, tokenizer, checkpoint: dir };
  } finally {
    r.close();
  }
}
