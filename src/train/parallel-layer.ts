// What the trainer asks of a parallel layout: build this rank's model, run its steps
// (a StepSchedule), reduce gradients, build the (possibly sharded) optimizer, average
// scalars and save/load checkpoints. The single-process layout is here; the
// distributed one (data / tensor parallel over a mesh) is in distributed.ts, and the
// pipeline helper plugs its schedules in through `schedule`.
import { GPT } from '../nn/gpt.js';
import type { TrainConfig } from './config.js';
import type { TrainState } from './train-checkpoint.js';
import { saveTrainCheckpoint, loadTrainCheckpoint } from './train-checkpoint.js';
import { buildOptimizer, type TrainOptimizer } from './optim-setup.js';
import { accumulationSchedule, type StepSchedule } from './step-schedule.js';

export interface ParallelLayer {
  /** Global rank and world size. */
  readonly rank: number;
  readonly world: number;
  /** This rank's data-parallel replica index and the number of replicas (the loader's shard). */
  readonly dataRank: number;
  readonly dataWorld: number;
  /** Builds this rank's part of the model (materializing only what it owns) with the plan applied. */
  buildModel(cfg: TrainConfig): GPT;
  /** The step schedule that runs forward/backward for this rank. */
  schedule(model: GPT, cfg: TrainConfig): StepSchedule;
  /** Waits for (or runs) the gradient reductions of this step; gradients are then global means. */
  reduceGrads(): Promise<void>;
  /** Mean of a per-rank scalar over the data-parallel replicas. */
  meanScalar(x: number): Promise<number>;
  /** The optimizer over what this rank updates (ZeRO: its shard), with global-norm clipping. */
  buildOptimizer(model: GPT, cfg: TrainConfig): TrainOptimizer;
  /** Collective save: every rank writes what it owns, in layout-independent (global) coordinates. */
  saveCheckpoint(root: string, model: GPT, optim: TrainOptimizer, st: TrainState): Promise<string>;
  /** Collective load from a checkpoint of any layout. */
  loadCheckpoint(dir: string, model: GPT, optim: TrainOptimizer): TrainState;
  /** One line on the layout and its memory per rank (null: nothing to say). */
  describe(): string | null;
  close(): Promise<void>;
}

/** One process holding the whole model. */
export function singleProcessLayer(): ParallelLayer {
  return {
    rank: 0, world: 1, dataRank: 0, dataWorld: 1,
    buildModel: (cfg) => new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute }),
    schedule: (model) => accumulationSchedule(model, { meanLoss: async (x) => x }),
    reduceGrads: async () => undefined,
    meanScalar: async (x) => x,
    buildOptimizer: (model, cfg) => buildOptimizer(model, cfg),
    saveCheckpoint: (root, model, optim, st) => saveTrainCheckpoint(root, model, optim, st),
    loadCheckpoint: (dir, model, optim) => loadTrainCheckpoint(dir, model, optim),
    describe: () => null,
    close: async () => undefined,
  };
}
