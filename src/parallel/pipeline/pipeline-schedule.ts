// The pipeline as the trainer's StepSchedule: the engine runs the step over the pipeline
// group, then the loss is averaged over data-parallel replicas like every schedule's.
import type { MicroBatch, StepSchedule, StepStats } from '../../train/step-schedule.js';
import type { PipelineEngine } from './pipeline-engine.js';

export function pipelineStepSchedule(engine: PipelineEngine, meanLoss: (x: number) => Promise<number>): StepSchedule {
  return {
    runStep: async (micro: MicroBatch[]) => meanLoss(await engine.runStep(micro)),
    evalLoss: async (mb: MicroBatch) => meanLoss(await engine.evalLoss(mb)),
    stats: (): StepStats | null => {
      const s = engine.lastStats;
      return s ? { bubble: s.meanBubble, bubbleTheory: s.theory } : null;
    },
  };
}
