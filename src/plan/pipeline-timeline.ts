// The pipeline part of the planner's step time: the trainer's own schedule
// (parallel/pipeline/schedule.ts: the per-rank action lists the engine runs) replayed in
// time with each virtual stage's traced forward and backward cost, and each activation or
// gradient message arriving one α–β transfer after its producer finished. The closed form
// (p−1)/v · t_micro assumes equal stages; the partitioner's stages are not equal (the
// embedding and the head sit on the first and last virtual stages), and under interleaving
// a rank's chunks wait on each other's neighbours, which the replay counts as it happens.
import { replaySchedule, scheduleShapeError, type ScheduleShape } from '../parallel/pipeline/schedule.js';
import type { Layout } from './layout.js';

export interface PipelineStep {
  /** Seconds from the first action to the last, all micro-batches (communication inside). */
  makespan: number;
  /** Of which the busiest rank waits (makespan − its action costs). */
  bubble: number;
}

/**
 * `vsCost[vs]`: seconds of one micro-batch's forward (F) and backward with recompute (B) on
 * virtual stage vs. `perMbComm`: communication inside each micro-batch's compute other than
 * the pipeline's own messages (tensor-parallel all-reduces, expert all-to-alls), spread over
 * the stages in proportion to their compute. `message`: one point-to-point transfer's seconds;
 * `messageCpu`: the work each message's send or receive puts on its rank's core (the
 * communication thread shares the device's cores on a CPU), added to the action that sends
 * or receives it.
 * Null for shapes the schedule refuses (the caller keeps the closed form).
 */
export function pipelineStep(l: Layout, vsCost: { F: number; B: number }[], perMbComm: number, tMb: number, message: number, messageCpu = 0, actionCost = 0): PipelineStep | null {
  const v = l.schedule === 'interleaved' ? l.vpp : 1;
  const shape: ScheduleShape = { kind: l.schedule, p: l.pp, m: l.ga, v };
  if (l.pp <= 1 || scheduleShapeError(shape) || vsCost.length !== l.pp * v) return null;
  const k = tMb > 0 ? 1 + perMbComm / tMb : 1, S = l.pp * v;
  // Messages a forward or backward of stage st exchanges: one with each neighbouring stage that exists.
  const msgs = (st: number): number => (st > 0 ? 1 : 0) + (st < S - 1 ? 1 : 0);
  // actionCost: the engine's own work per action (overhead-terms.ts), beside the ops and messages.
  const cost = (kind: 'F' | 'B', st: number): number => k * vsCost[st]![kind] + msgs(st) * messageCpu + actionCost;
  const sim = replaySchedule(shape, cost, message);
  const busiest = Math.max(...Array.from({ length: l.pp }, (_, r) => {
    let b = 0;
    for (let c = 0; c < v; c++) b += cost('F', c * l.pp + r) + cost('B', c * l.pp + r);
    return b * l.ga;
  }));
  return { makespan: sim.makespan, bubble: Math.max(0, sim.makespan - busiest) };
}
