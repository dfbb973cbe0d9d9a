// MoE bookkeeping for a pipeline rank, which holds only its stages' MoE layers (shared by
// the distributed and the expert-parallel layouts): routing statistics summed over the
// stage's data-parallel replicas and then over the pipeline (so the metrics and the bias
// update equal one process's), and the `bias` balancing's routing biases of every layer
// gathered into (and restored from) the checkpoint state.
import type { Communicator } from '../runtime/communicator.js';
import type { GptPipelineStages } from '../parallel/plans/gpt-pipeline.js';
import type { TrainConfig } from './config.js';
import type { TrainState } from './train-checkpoint.js';
import { moeAfterStep, type MoeStepMetrics } from './moe-step.js';

/** Element-wise sum of float64s over a group, added in group-rank order (identical on every rank). */
export async function sumFloat64Vector(g: Communicator, v: Float64Array): Promise<Float64Array> {
  if (g.size === 1) return v;
  const all = new Float64Array(g.size * v.length);
  await g.allGather(new Int32Array(v.buffer, v.byteOffset, v.length * 2), new Int32Array(all.buffer)).wait();
  const s = new Float64Array(v.length);
  for (let r = 0; r < g.size; r++) for (let i = 0; i < v.length; i++) s[i]! += all[r * v.length + i]!;
  return s;
}

/** moeAfterStep for a pipeline rank: dp sums through `meanScalar` (over dp ranks), then the pipeline sum. */
export function pipelineMoeAfterStep(stages: GptPipelineStages, cfg: TrainConfig, dp: number, meanScalar: (x: number) => Promise<number>, pp: Communicator, sumCounts?: (v: Int32Array) => Promise<void>): Promise<MoeStepMetrics | null> {
  return moeAfterStep(stages, dp, meanScalar, { ...stages.moeLayout(), experts: cfg.model.moe?.experts ?? 0, sum: (v) => sumFloat64Vector(pp, v) }, sumCounts);
}

/** The checkpoint state with every MoE layer's routing biases (balance = bias); every pipeline rank calls it. */
export async function withPipelineMoeBias(stages: GptPipelineStages, cfg: TrainConfig, pp: Communicator, st: TrainState): Promise<TrainState> {
  const moe = cfg.model.moe;
  if (moe?.balance !== 'bias' || !moe.experts) return st;
  const { indices, total } = stages.moeLayout(), E = moe.experts;
  const v = new Float64Array(total * E);
  stages.moeLayers().forEach((m, i) => { if (m.routingBias) v.set(m.routingBias, indices[i]! * E); });
  const s = await sumFloat64Vector(pp, v);
  return { ...st, moeBias: Array.from({ length: total }, (_, l) => Array.from(s.subarray(l * E, (l + 1) * E))) };
}

/** Restores this rank's layers' routing biases from the checkpoint state (every layer's, in block order). */
export function restorePipelineMoeBias(stages: GptPipelineStages, st: TrainState, dir: string): void {
  const layers = stages.moeLayers();
  if (!layers.some((m) => m.routingBias)) return;
  const all = st.moeBias;
  if (!all) throw new Error(`${dir}: the checkpoint has no moeBias (model.moe.balance = bias needs the routing biases); it was written by a run with another model.moe.balance`);
  const { indices } = stages.moeLayout();
  layers.forEach((m, i) => {
    const b = all[indices[i]!];
    if (!b || b.length !== m.routingBias!.length) throw new Error(`${dir}: moeBias[${indices[i]}] is missing or has the wrong expert count (model.moe.experts = ${m.routingBias!.length})`);
    m.routingBias!.set(b);
  });
}
