// Refuses a run whose training state cannot fit before anything large is allocated,
// instead of dying half-way through allocation (a V8 "heap out of memory" abort, a
// RangeError from a failed ArrayBuffer, a native malloc failure). The need is the
// planner's per-rank estimate (memory-plan.ts: weights, gradients, AdamW state,
// activations, from the model traced on the meta device), with AdamW state replaced
// by the chunk buffers under parallel.offload=disk. What the process can still get is
// the tightest of: RLIMIT_AS (ulimit -v) minus the address space already mapped, the
// cgroup's memory limit minus its usage (v2 memory.max, v1 memory.limit_in_bytes),
// and MemAvailable shared by the ranks on this host.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TrainConfig } from './config.js';
import { planMemory, fmtBytes } from './memory-plan.js';
import { gptParamCount } from '../nn/gpt-config.js';
import { DEFAULT_CHUNK } from '../parallel/offload-store.js';
import { gemm } from '../backend/blas.js';
import { stat } from 'node:fs/promises';

/**
 * Maps what the runtime maps lazily on first use, so that the address space measured
 * next is what training starts from: BLAS (and oneDNN) thread buffers on the first
 * GEMM, libuv's thread pool (its stacks) on the first asynchronous file operation
 * (offload I/O, checkpoint writes). Costs one 256² GEMM and one stat.
 */
export async function warmRuntime(): Promise<void> {
  const n = 256, a = new Float32Array(n * n), c = new Float32Array(n * n);
  gemm(false, false, n, n, n, 1, a, 0, n, a, 0, n, 0, c, 0, n);
  await stat('.');
}

export interface MemoryNeed {
  total: number;
  parts: { weights: number; grads: number; optimizer: number; activations: number };
}

export interface MemoryRoom {
  bytes: number;
  /** Which limit is tightest, in words. */
  source: string;
}

/** Estimated bytes one rank allocates for training (see the file comment). */
export function estimateRankBytes(cfg: TrainConfig): MemoryNeed {
  let parts: MemoryNeed['parts'];
  try {
    const b = planMemory(cfg).bytes;
    // The planner already models offload=disk (two chunk buffers) and ZeRO-3's gather buffers.
    parts = { weights: b.weights + b.gather, grads: b.grads, optimizer: b.optimizer, activations: b.activations };
  } catch {
    // Models the planner does not trace (mixture of experts): the ZeRO formula over the closed-form count.
    const P = gptParamCount(cfg.model), dp = cfg.parallel.dp, z = cfg.parallel.zero;
    parts = { weights: 4 * P / (z >= 3 ? dp : 1), grads: 4 * P / (z >= 2 ? dp : 1), optimizer: 8 * P / (z >= 1 ? dp : 1), activations: 0 };
    // Offload keeps two chunk buffers of master + exp_avg + exp_avg_sq in memory instead of the moments.
    if (cfg.parallel.offload === 'disk') parts.optimizer = Math.min(parts.optimizer * 1.5, 2 * 12 * DEFAULT_CHUNK);
  }
  return { total: parts.weights + parts.grads + parts.optimizer + parts.activations, parts };
}

function readNum(path: string): number | null {
  try {
    const t = readFileSync(path, 'utf8').trim();
    if (t === 'max') return null;
    const v = Number(t);
    return Number.isFinite(v) ? v : null;
  } catch { return null; }
}

/** Bytes this process can still allocate, by the tightest limit (null: no limit found). */
export function memoryRoom(ranksOnHost = 1): MemoryRoom | null {
  const rooms: MemoryRoom[] = [];
  try {
    const lim = /^Max address space\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    const vm = /^VmSize:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (lim && lim[1] !== 'unlimited' && vm) {
      const soft = Number(lim[1]), used = Number(vm[1]) * 1024;
      rooms.push({ bytes: soft - used, source: `the address-space limit (RLIMIT_AS, ulimit -v) of ${fmtBytes(soft)}, ${fmtBytes(used)} of it already mapped` });
    }
  } catch { /* not Linux */ }
  try {
    for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
      const [, ctrl, path] = line.split(':');
      if (path === undefined) continue;
      const dirs = ctrl === '' ? [join('/sys/fs/cgroup', path)] : ctrl!.split(',').includes('memory') ? [join('/sys/fs/cgroup/memory', path), '/sys/fs/cgroup/memory'] : [];
      for (const d of dirs) {
        const v2 = ctrl === '';
        const max = readNum(join(d, v2 ? 'memory.max' : 'memory.limit_in_bytes'));
        const cur = readNum(join(d, v2 ? 'memory.current' : 'memory.usage_in_bytes'));
        // cgroup v1 reports "no limit" as a huge number.
        if (max !== null && cur !== null && max < 2 ** 60 && existsSync(d)) {
          rooms.push({ bytes: (max - cur) / ranksOnHost, source: `the cgroup memory limit of ${fmtBytes(max)} (${d}), ${fmtBytes(cur)} in use${ranksOnHost > 1 ? `, shared by ${ranksOnHost} ranks` : ''}` });
          break;
        }
      }
    }
  } catch { /* no cgroup information */ }
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) rooms.push({ bytes: (Number(m[1]) * 1024) / ranksOnHost, source: `MemAvailable of ${fmtBytes(Number(m[1]) * 1024)} on this host${ranksOnHost > 1 ? `, shared by ${ranksOnHost} ranks` : ''}` });
  } catch { /* no /proc/meminfo */ }
  if (!rooms.length) return null;
  return rooms.reduce((a, b) => (b.bytes < a.bytes ? b : a));
}

function advice(cfg: TrainConfig): string {
  if (cfg.parallel.offload === 'disk') {
    return 'parallel.offload=disk is already on (master weights and AdamW state are on disk); the weights, gradients and activations left in memory still do not fit: ' +
      'raise the limit, or shard them with parallel.dp and parallel.zero=3';
  }
  return 'rerun with --parallel.offload=disk --parallel.offloadDir=PATH (fp32 master weights and AdamW state in a file per rank under PATH), ' +
    'or shard the state over more ranks with parallel.dp and parallel.zero';
}

/** Throws a clear out-of-memory error, naming the settings to use, when the run cannot fit. */
export function checkMemoryFits(cfg: TrainConfig, rank: number, ranksOnHost = 1, room: MemoryRoom | null = memoryRoom(ranksOnHost)): void {
  if (!room) return;
  const need = estimateRankBytes(cfg);
  if (need.total <= room.bytes) return;
  const p = need.parts;
  throw new Error(`out of memory: rank ${rank} needs about ${fmtBytes(need.total)} for training state (weights ${fmtBytes(p.weights)}, gradients ${fmtBytes(p.grads)}, ` +
    `AdamW state ${fmtBytes(p.optimizer)}${cfg.parallel.offload === 'disk' ? ' of offload buffers' : ''}, activations ${fmtBytes(p.activations)}) but only ${fmtBytes(Math.max(0, room.bytes))} is left under ${room.source}; ${advice(cfg)}`);
}

/** An allocation failure during training as the same clear message (other errors pass through). */
export function explainAllocationFailure(e: unknown, cfg: TrainConfig): unknown {
  if (!(e instanceof RangeError) || !/allocation failed|out of memory/i.test(e.message)) return e;
  return new Error(`out of memory: ${e.message} while allocating training state; ${advice(cfg)}`);
}
