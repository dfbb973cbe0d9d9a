// What a caller gives and gets from the hybrid trainer (hybrid-trainer.ts): its options,
// the batch source it reads, its reports, and the dense optimizer built from its config.
import type { Tensor } from '../core/tensor.js';
import type { Communicator } from '../runtime/communicator.js';
import { AdamW, Adagrad, SGD, type BaseHyper, type Optimizer } from '../optim/index.js';
import type { EmbeddingClient } from './embedding-client.js';
import type { RecBatch } from './criteo.js';
import type { DLRM } from './dlrm.js';

/** This trainer's batches; `open(step)` starts at the batch of global step `step` (resuming). */
export interface BatchSource {
  open(step: number): AsyncIterator<RecBatch>;
}

export interface DenseOptimizerConfig {
  kind: 'adamw' | 'sgd' | 'adagrad';
  lr: number;
  weightDecay?: number;
}

export interface HybridTrainerOptions {
  model: DLRM;
  client: EmbeddingClient;
  /** Dense gradient allreduce across trainers; null/absent = a single trainer. */
  comm?: Communicator | null;
  /** k: how many batches embedding lookups may run ahead of the applied gradients. */
  staleness: number;
  /**
   * With k > 0: replay this trainer's own in-flight gradients on the stale rows it
   * looked up, with the servers' optimizer (stale-row-correction.ts). Default false.
   */
  stalenessCorrection?: boolean;
  /** Feature group of each sparse field (default: the field index). */
  groups?: number[];
  dense?: DenseOptimizerConfig;
  /** Embedding gradients are multiplied by this before the push (default 1 / world: gradient of the global mean loss). */
  embGradScale?: number;
  checkpoint?: { dir: string; every: number; keep?: number };
  /**
   * Single-trainer fault tolerance: called when an embedding request fails; returns a
   * connected client once the servers are back. Training then rolls back to the last
   * checkpoint (dense state, every shard, data position) and goes on.
   */
  recover?: (err: Error) => Promise<EmbeddingClient>;
  maxRecoveries?: number;
  /** Called after every step (awaited). */
  onStep?: (step: number, loss: number) => void | Promise<void>;
  log?: (line: string) => void;
}

export interface TrainReport {
  steps: number;
  /** Local loss of every step run in this call, by global step (after a rollback, the re-run steps overwrite). */
  losses: Map<number, number>;
  samples: number;
  seconds: number;
  samplesPerSec: number;
  recoveries: number;
  /** Row updates replayed by the staleness correction (0 when off). */
  correctedRows: number;
  /** This process's CPU time (user + system) over the timed loop: CPU per step, whatever the machine's load. */
  cpuSeconds: number;
  /** Wall time steps spent waiting for their embedding rows (what staleness k hides). */
  lookupWaitSeconds: number;
  /** Wall time in the dense gradient all-reduce (waiting for the slowest trainer included). */
  allReduceSeconds: number;
}

export interface EvalReport { auc: number; logLoss: number; samples: number; positives: number }

/** The dense parameters' optimizer (every trainer runs the same one on the averaged gradients). */
export function makeOptimizer(params: Tensor[], c: DenseOptimizerConfig): Optimizer<BaseHyper> {
  const wd = c.weightDecay ?? 0;
  switch (c.kind) {
    case 'adamw': return new AdamW(params, { lr: c.lr, weightDecay: wd }) as unknown as Optimizer<BaseHyper>;
    case 'sgd': return new SGD(params, { lr: c.lr, weightDecay: wd }) as unknown as Optimizer<BaseHyper>;
    case 'adagrad': return new Adagrad(params, { lr: c.lr, weightDecay: wd }) as unknown as Optimizer<BaseHyper>;
  }
}

/** A BatchSource over batches already in memory (tests, benchmarks); step s is batches[s % length]. */
export function arraySource(batches: readonly RecBatch[]): BatchSource {
  return {
    open(step: number): AsyncIterator<RecBatch> {
      let s = step;
      return { next: async () => ({ done: false, value: batches[s++ % batches.length]! }) };
    },
  };
}
