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
import type { Module } from '../nn/module.js';
import type { Rng } from '../core/rng.js';
import type { MoeStepMetrics } from './moe-step.js';

/**
 * What the trainer needs of a rank's model: its parameters and the generator dropout draws
 * from (saved in checkpoints). A whole GPT, or under pipeline parallelism a rank's stages.
 */
export type TrainModel = Module & { readonly rng: Rng };

export interface ParallelLayer {
  /** Global rank and world size. */
  readonly rank: number;
  readonly world: number;
  /** This rank's data-parallel replica index and the number of replicas (the loader's shard). */
  readonly dataRank: number;
  readonly dataWorld: number;
  /** Builds this rank's part of the model (materializing only what it owns) with the plan applied. */
  buildModel(cfg: TrainConfig): TrainModel;
  /** The step schedule that runs forward/backward for this rank. */
  schedule(model: TrainModel, cfg: TrainConfig): StepSchedule;
  /** Waits for (or runs) the gradient reductions of this step; gradients are then global means. */
  reduceGrads(): Promise<void>;
  /** Mean of a per-rank scalar over the data-parallel replicas. */
  meanScalar(x: number): Promise<number>;
  /** In-place sum of integer counts over the data-parallel replicas, in one collective (MoE routing histograms); absent: element-wise through meanScalar. */
  sumCounts?(v: Int32Array): Promise<void>;
  /** The optimizer over what this rank updates (ZeRO: its shard), with global-norm clipping. */
  buildOptimizer(model: TrainModel, cfg: TrainConfig): TrainOptimizer;
  /** Collective save: every rank writes what it owns, in layout-independent (global) coordinates. */
  saveCheckpoint(root: string, model: TrainModel, optim: TrainOptimizer, st: TrainState): Promise<string>;
  /** Collective load from a checkpoint of any layout. */
  loadCheckpoint(dir: string, model: TrainModel, optim: TrainOptimizer): TrainState;
  /**
   * MoE bookkeeping after an optimizer step when this layout holds only part of the MoE
   * layers (pipeline stages); absent: the trainer runs moeAfterStep on the whole GPT.
   */
  moeAfterStep?(model: TrainModel): Promise<MoeStepMetrics | null>;
  /** One line on the layout and its memory per rank (null: nothing to say). */
  describe(): string | null;
  close(): Promise<void>;
}

/** One process holding the whole model. */
export function singleProcessLayer(): ParallelLayer {
  return {
    rank: 0, world: 1, dataRank: 0, dataWorld: 1,
    buildModel: (cfg) => new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute }),
    schedule: (model) => accumulationSchedule(asGpt(model), { meanLoss: async (x) => x }),
    reduceGrads: async () => undefined,
    meanScalar: async (x) => x,
    buildOptimizer: (model, cfg) => buildOptimizer(model, cfg),
    saveCheckpoint: (root, model, optim, st) => saveTrainCheckpoint(root, model, optim, st),
    loadCheckpoint: (dir, model, optim) => loadTrainCheckpoint(dir, model, optim),
    describe: () => null,
    close: async () => undefined,
  };
}

/** The whole-model layouts drive a GPT; anything else reaching them is a wiring bug. */
export function asGpt(model: TrainModel): GPT {
  if (!(model instanceof GPT)) throw new Error(`internal: expected a GPT, got ${model.constructor.name}`);
  return model;
}
