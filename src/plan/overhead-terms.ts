// The framework's fixed costs in the planner's step time, from calibrated terms
// (device.overhead of a cluster spec, measured by src/plan/calibrate-overhead.ts):
//   - per traced op: the op's dispatch, tape record, allocation and scope work, forward and
//     backward apart, measured by running a real model at shapes whose compute is ~0 and
//     dividing by the ops its meta trace counts (the same trace the plan prices);
//   - co-running devices: a device's compute slows down when the node's other devices
//     compute at the same time (they share the last-level cache and memory bandwidth, and
//     on a CPU the runtime's helper threads, V8's GC and compiler workers, no longer find
//     an idle core). Measured as the step time of the same real model run on k devices of
//     the node at once over the step time alone, at k = 1 (1 by definition) and k = all.
// A cluster without the field keeps the older single figure (device.opOverhead per op)
// and no co-running slowdown (GPUs: each device its own memory system).
import type { ClusterSpec, Figure } from './cluster.js';
import { devices, type Layout } from './layout.js';

export interface OverheadSpec {
  source: string;
  /** Seconds per traced forward op (views excluded, their cost folded in) of a real model step. */
  opForward: Figure;
  /** Seconds per traced backward op. */
  opBackward: Figure;
  /**
   * [devices of the node computing at once, the main thread's CPU per step over its CPU
   * alone]: the slowdown of a device's compute from co-running devices (shared cache and
   * memory bandwidth); interpolated linearly in the count. The helper threads' share is
   * applied on top where the devices fill the node (layoutCoRun).
   */
  coRun?: { source: string; points: [number, number][] };
  /**
   * CPU seconds of the runtime's helper threads (V8's GC and compiler workers) per traced
   * non-view op: busy time a device's cores spend beside the step's own work. Per op, not per
   * second of compute: the worker measured 0.028 helper CPU-s per gpt-tiny step and 0.014 per
   * gpt-small step (same op count, 5× the compute), the garbage being the ops' own objects.
   */
  helperCpuPerOp?: Figure;
  /** Seconds of the pipeline engine's own work per schedule action (keeping a forward's graph alive across actions and releasing it after the backward), beyond the ops. */
  pipelineAction?: Figure;
}

/** Fixed seconds of one traced op in a phase (a recomputed forward is a forward). */
export function opFixedSeconds(c: ClusterSpec, phase: string): number {
  const o = c.device.overhead;
  if (!o) return c.device.opOverhead.value;
  return phase === 'backward' ? o.opBackward.value : o.opForward.value;
}

/** The pipeline engine's own seconds per schedule action (0 without a measurement). */
export function pipelineActionSeconds(c: ClusterSpec): number {
  return c.device.overhead?.pipelineAction?.value ?? 0;
}

/** CPU seconds the runtime's helper threads add per traced op (0 without a measurement). */
export function helperCpuPerOp(c: ClusterSpec): number {
  return c.device.overhead?.helperCpuPerOp?.value ?? 0;
}

/** Devices of one node that compute at once under the layout (all ranks of a node run the same schedule). */
export function coRunning(l: Layout, c: ClusterSpec): number {
  return Math.max(1, Math.min(devices(l), c.devicesPerNode.value));
}

/** The factor on a device's compute time when `k` devices of its node compute at once (1 without a measurement). */
export function coRunFactor(c: ClusterSpec, k: number): number {
  const pts = c.device.overhead?.coRun?.points;
  if (!pts?.length) return 1;
  const p: [number, number][] = [[1, 1], ...pts.filter(([n]) => n > 1)].sort((a, b) => a[0] - b[0]) as [number, number][];
  if (k <= p[0]![0]) return p[0]![1];
  for (let i = 1; i < p.length; i++) {
    const [x0, y0] = p[i - 1]!, [x1, y1] = p[i]!;
    if (k <= x1) return y0 + ((k - x0) / (x1 - x0)) * (y1 - y0);
  }
  return p[p.length - 1]![1];
}

/** The factor on a device's compute time under a layout: the co-running slowdown at the layout's devices per node. */
export function layoutCoRun(l: Layout, c: ClusterSpec): number {
  return coRunFactor(c, coRunning(l, c));
}

/** Whether the helper threads' CPU lands in the wall step (every device of the node computes), rather than on an idle core beside it. */
export function helpersInWall(l: Layout, c: ClusterSpec): boolean {
  return c.devicesPerNode.value > 1 && coRunning(l, c) >= c.devicesPerNode.value;
}

/**
 * The helper threads' seconds per traced op: `wall`, added to each op's time where the
 * layout fills every core of the node (no idle core is left for them, their CPU is taken
 * from the ranks); `busy`, added only to the busy time otherwise (they run beside the step).
 */
export function helperSeconds(l: Layout, c: ClusterSpec): { wall: number; busy: number } {
  const h = helperCpuPerOp(c);
  return helpersInWall(l, c) ? { wall: h, busy: 0 } : { wall: 0, busy: h };
}

/** Checks device.overhead of a cluster file; errors name the file and the field. */
export function checkOverhead(v: unknown, file: string): void {
  if (v === undefined) return;
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (!isObj(v)) throw new Error(`${file}: field 'device.overhead' must be an object`);
  if (typeof v.source !== 'string' || v.source.trim().length < 8) throw new Error(`${file}: field 'device.overhead.source' must cite where the figures come from, got ${JSON.stringify(v.source)}`);
  for (const k of ['opForward', 'opBackward'] as const) {
    const f = v[k];
    if (!isObj(f) || typeof f.value !== 'number' || !Number.isFinite(f.value) || f.value < 0) throw new Error(`${file}: field 'device.overhead.${k}.value' must be a number >= 0 (seconds), got ${JSON.stringify(isObj(f) ? f.value : f)}`);
    if (typeof f.source !== 'string' || f.source.trim().length < 8) throw new Error(`${file}: field 'device.overhead.${k}.source' must cite where the figure comes from`);
  }
  for (const k of ['pipelineAction', 'helperCpuPerOp'] as const) {
    const f = v[k];
    if (f !== undefined && (!isObj(f) || typeof f.value !== 'number' || !Number.isFinite(f.value) || f.value < 0)) throw new Error(`${file}: field 'device.overhead.${k}.value' must be a number >= 0, got ${JSON.stringify(isObj(f) ? f.value : f)}`);
  }
  if (v.coRun !== undefined) {
    if (!isObj(v.coRun)) throw new Error(`${file}: field 'device.overhead.coRun' must be an object`);
    const pts = v.coRun.points;
    if (!Array.isArray(pts) || !pts.length || pts.some((p) => !Array.isArray(p) || p.length !== 2 || !(p[0] >= 1) || !(p[1] > 0) || !Number.isFinite(p[1]))) {
      throw new Error(`${file}: field 'device.overhead.coRun.points' must be a non-empty list of [devices >= 1, factor > 0]`);
    }
  }
}
