// Measured memory for the progress line and metrics.jsonl (issue 8, "honest accounting"):
// what the process really holds, beside what the planner predicted for this rank.
// Sampled at log steps only: process.memoryUsage() walks V8's heap spaces and reads RSS
// (tens of microseconds), cheap once per logged step but not worth doing every step.
import { pool } from '../core/buffer-pool.js';
import { arrayBufferPeak } from '../core/array-buffer-peak.js';
import type { TrainConfig } from './config.js';
import { planMemory } from './memory-plan.js';

export interface MemorySample {
  /** process.memoryUsage().arrayBuffers: every ArrayBuffer/SharedArrayBuffer alive (weights, gradients, optimizer state, gather buffers, activations). */
  arrayBuffersMB: number;
  /** Of those, idle buffers the tensor pool keeps for reuse. */
  poolIdleMB: number;
  /** The highest array-buffer reading so far (array-buffer-peak.ts samples at every new allocation). */
  peakArrayBuffersMB: number;
  rssMB: number;
  /** The planner's per-rank total for this configuration (what `train --dry-run` prints), if it traces. */
  planMB?: number;
}

const MB = 2 ** 20;

/** The planner's per-rank prediction in MiB, or undefined for a model it does not trace. */
export function plannedMB(cfg: TrainConfig): number | undefined {
  try { return planMemory(cfg).bytes.total / MB; } catch { return undefined; }
}

export function sampleMemory(planMB?: number): MemorySample {
  const u = process.memoryUsage();
  return {
    arrayBuffersMB: u.arrayBuffers / MB,
    poolIdleMB: pool.stats().pooledBytes / MB,
    peakArrayBuffersMB: arrayBufferPeak() / MB,
    rssMB: u.rss / MB,
    ...(planMB !== undefined ? { planMB } : {}),
  };
}

/** ` | mem 220 MiB (peak 231, pool idle 12, RSS 320; plan 205)` for the progress line. */
export function fmtMemory(m: MemorySample): string {
  const r = (x: number) => x.toFixed(0);
  return ` | mem ${r(m.arrayBuffersMB)} MiB (peak ${r(m.peakArrayBuffersMB)}, pool idle ${r(m.poolIdleMB)}, RSS ${r(m.rssMB)}${m.planMB !== undefined ? `; plan ${r(m.planMB)}` : ''})`;
}
