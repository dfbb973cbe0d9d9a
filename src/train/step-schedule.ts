// The trainer's step-schedule seam: how one optimizer step's micro-batches run forward
// and backward. The trainer owns the loop (data, optimizer, checkpoints); a schedule
// owns the order of forward/backward work. Plain and accumulation schedules live here;
// the pipeline schedules (src/parallel/pipeline/) implement the same interface for a
// rank that holds only some layers.
import { fromStorage, full, type Tensor } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { backward, noGrad } from '../autograd/tape.js';

export interface MicroBatch { x: Int32Array; y: Int32Array; rows: number; T: number }

export interface StepSchedule {
  /** Forward + backward over one optimizer step's micro-batches; returns their mean
   *  loss, identical on every rank. Gradients are left (scaled by 1/micro.length) for
   *  the parallel layer to reduce. */
  runStep(micro: MicroBatch[]): Promise<number>;
  /** Validation loss of one micro-batch without gradients, identical on every rank. */
  evalLoss(mb: MicroBatch): Promise<number>;
}

/** A model the plain schedules can drive: mean loss of (rows, T) token ids against targets. */
export interface LossModel {
  loss(x: Tensor, y: Tensor): Tensor;
  training: boolean;
  train(on?: boolean): unknown;
}

/** What a schedule needs from the parallel layer (all optional except the mean). */
export interface ScheduleHooks {
  /** Backward's per-leaf gradient-ready hook, used on the last micro-batch only
   *  (data parallelism starts bucket reductions from it). */
  onGradReady?: (p: Tensor) => void;
  /** Before each forward; `lastMicro` says whether gradients are reduced after it
   *  (ZeRO-3 gathers the parameters used at both ends of the model here). */
  beforeForward?: (lastMicro: boolean) => void;
  /** After an evaluation forward (ZeRO-3 releases what beforeForward gathered). */
  afterEval?: () => void;
  /** Mean of a per-rank scalar over the data-parallel replicas. */
  meanLoss(x: number): Promise<number>;
}

/** Every micro-batch forward+backward in turn, gradients accumulating, reduced after the last. */
export function accumulationSchedule(model: LossModel, hooks: ScheduleHooks): StepSchedule {
  return {
    async runStep(micro) {
      if (micro.length === 0) throw new Error('step schedule: a step needs at least one micro-batch');
      const scale = 1 / micro.length;
      let sum = 0;
      micro.forEach((mb, i) => {
        const last = i === micro.length - 1;
        hooks.beforeForward?.(last);
        sum += scope(() => {
          const loss = model.loss(fromStorage(mb.x, [mb.rows, mb.T], 'int32'), fromStorage(mb.y, [mb.rows, mb.T], 'int32'));
          backward(loss, { grad: full([], scale), onLeafGradReady: last ? hooks.onGradReady : undefined });
          return loss.item();
        });
      });
      return hooks.meanLoss(sum / micro.length);
    },
    async evalLoss(mb) {
      const wasTraining = model.training;
      model.train(false);
      let local: number;
      try {
        hooks.beforeForward?.(false);
        local = noGrad(() => scope(() => model.loss(fromStorage(mb.x, [mb.rows, mb.T], 'int32'), fromStorage(mb.y, [mb.rows, mb.T], 'int32')).item()));
        hooks.afterEval?.();
      } finally {
        model.train(wasTraining);
      }
      return hooks.meanLoss(local);
    },
  };
}

/** One micro-batch per step (the accumulation schedule, refusing more). */
export function plainSchedule(model: LossModel, hooks: ScheduleHooks): StepSchedule {
  const acc = accumulationSchedule(model, hooks);
  return {
    runStep: (micro) => {
      if (micro.length !== 1) throw new Error(`plain schedule: got ${micro.length} micro-batches; use the accumulation schedule (train.gradAccum > 1)`);
      return acc.runStep(micro);
    },
    evalLoss: (mb) => acc.evalLoss(mb),
  };
}
