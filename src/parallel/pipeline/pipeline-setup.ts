// Pipeline parallelism for one rank of a mesh: checks the layout once (naming the config
// field), builds this rank's GPT stages and the engine over the mesh's pipeline group,
// and the small group that keeps tied embedding copies in sync.
import type { Communicator } from '../../runtime/communicator.js';
import type { Tensor } from '../../core/tensor.js';
import type { GptConfig } from '../../nn/gpt-config.js';
import { GptPipelineStages, gptStagePartition, type GptStageOptions } from '../plans/gpt-pipeline.js';
import { PipelineEngine } from './pipeline-engine.js';
import { scheduleShapeError, type PipelineScheduleKind, type ScheduleShape } from './schedule.js';

export interface PipelineSettings {
  /** parallel.pp */
  pp: number;
  /** parallel.pipelineSchedule */
  schedule: PipelineScheduleKind;
  /** parallel.pipelineChunks (used by the interleaved schedule) */
  chunks: number;
  /** train.gradAccum: micro-batches per optimizer step */
  microBatches: number;
}

export function pipelineShape(s: PipelineSettings): ScheduleShape {
  return { kind: s.schedule, p: s.pp, m: s.microBatches, v: s.schedule === 'interleaved' ? s.chunks : 1 };
}

/** Throws, naming the field, when the model cannot be pipelined this way. */
export function validatePipeline(model: GptConfig, s: PipelineSettings, zero: number): void {
  if (s.pp <= 1) return;
  const shape = pipelineShape(s);
  const err = scheduleShapeError(shape);
  if (err) throw new Error(err);
  gptStagePartition(model, shape.p, shape.v); // nLayer >= pp × chunks
  if (zero === 3) {
    throw new Error('parallel.zero=3 cannot be combined with parallel.pp > 1 (ZeRO-3 gathers parameters per micro-batch in order, which pipeline schedules interleave); use parallel.zero=1 or 2');
  }
}

/** Global ranks {first stage, last stage} of this rank's pipeline when the embedding is tied (null otherwise or for middle stages). */
export function embedGroupRanks(pipelineRanks: readonly number[], myRank: number, tied: boolean): number[] | null {
  if (!tied || pipelineRanks.length < 2) return null;
  const g = [pipelineRanks[0]!, pipelineRanks[pipelineRanks.length - 1]!];
  return g.includes(myRank) ? g : null;
}

export interface RankPipeline {
  stages: GptPipelineStages;
  shape: ScheduleShape;
  /** The engine, once the data-parallel layer (built over the stages) gives its gradient-ready hook. */
  connect(onGradReady?: (p: Tensor) => void): PipelineEngine;
}

/**
 * This rank's stages and engine. `pp` is the mesh's pipeline group (group rank = stage
 * index); `world` creates the embedding group (its two members call this together).
 */
export function buildRankPipeline(model: GptConfig, s: PipelineSettings, pp: Communicator, world: Communicator, opts: GptStageOptions): RankPipeline {
  const shape = pipelineShape(s);
  if (pp.size !== s.pp) throw new Error(`pipeline: parallel.pp is ${s.pp} but the pipeline group has ${pp.size} ranks`);
  const stages = new GptPipelineStages(model, { p: shape.p, v: shape.v, rank: pp.rank }, opts);
  const me = world.ranks[world.rank]!;
  const eg = embedGroupRanks(pp.ranks, me, model.tieEmbeddings);
  const embedGroup = eg ? world.newGroup(eg, 'pp-embed') : null;
  return { stages, shape, connect: (onGradReady) => new PipelineEngine({ pp, stages, shape, embedGroup, onGradReady }) };
}
