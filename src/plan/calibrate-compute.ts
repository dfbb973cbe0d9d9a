// The compute-rate measurements of `athanor plan --calibrate` that src/plan/compute-rates.ts
// reads: GEMM tables for the three transpositions of a linear layer's GEMMs, attention
// forward and backward by shape, the ops' forward and backward, and the optimizer step.
// Each job is measured in interleaved rounds (one rep of every job per round) and keeps its
// median rep: a burst of another process then costs one rep of many jobs instead of every
// rep of one, which a median of consecutive reps cannot reject. The median, not the
// fastest rep: a repeated kernel's luckiest rep runs on caches warmed by itself, which a
// training step's kernels, each between others, never see. Under load the fastest reps
// sat up to 50% above the typical rate for small kernels and predicted gpt-tiny 14-29%
// below its quiet runs, where a quiet median calibration had matched within 3%. How far
// the two lie apart is logged as the contention the calibration saw (a few percent on a
// quiet machine; a large figure says: calibrate again when the machine is quiet).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gemm } from '../backend/blas.js';
import { fromStorage, metaTensor, type Tensor } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { attention, permute, sum } from '../ops/index.js';
import { setMetaSink, type MetaOpEvent } from '../ops/meta.js';
import { backward } from '../autograd/tape.js';
import { Rng } from '../core/rng.js';
import { buildOptimizer } from '../train/optim-setup.js';
import { presetConfig } from '../train/config.js';
import { Module } from '../nn/module.js';
import { ADAMW_BYTES, type GemmPoint } from './compute-rates.js';

/** CPU seconds of fn (user + system of this process): everything measured runs on this thread, and other processes' time on the core is not counted. */
function cpuSeconds(fn: () => void): number {
  const c0 = process.cpuUsage();
  fn();
  const d = process.cpuUsage(c0);
  return Math.max(1e-7, (d.user + d.system) / 1e6);
}

/** A measurement job: its CPU seconds are the whole call's, or the part it timed itself (cpuSeconds) and returned (a backward pass without its forward). */
export type Job = () => void | number;

/** How far the median rep of each job sat above its fastest, over every interleaved measurement since start (the contention the calibration saw). */
export const contention: number[] = [];

/** Median CPU seconds of each job over `reps` interleaved rounds, after one untimed round (an even count: the mean of the middle two). */
export function interleaved(jobs: Job[], reps: number): number[] {
  for (const j of jobs) j();
  const ts = jobs.map(() => [] as number[]);
  for (let r = 0; r < reps; r++) {
    jobs.forEach((j, i) => {
      let own: void | number = undefined;
      const whole = cpuSeconds(() => { own = j(); });
      ts[i]!.push(typeof own === 'number' ? own : whole);
    });
  }
  return ts.map((t) => {
    const s = [...t].sort((a, b) => a - b);
    const h = s.length >> 1, med = s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
    contention.push(med / s[0]! - 1);
    return med;
  });
}

const rng = new Rng(17);
const randn = (n: number, scale = 1): Float32Array => {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
};

/**
 * Bytes of the largest cache of this machine (sysfs, Linux), or null where it cannot be read.
 * The cold-operand arena is sized from it, so that operands are out of every cache level.
 */
export function lastLevelCacheBytes(): number | null {
  let best: number | null = null;
  try {
    const dir = '/sys/devices/system/cpu/cpu0/cache';
    for (const e of readdirSync(dir)) {
      if (!/^index\d+$/.test(e)) continue;
      const m = /^(\d+)([KMG]?)/.exec(readFileSync(join(dir, e, 'size'), 'utf8').trim());
      if (!m) continue;
      const b = Number(m[1]) * (m[2] === 'K' ? 1024 : m[2] === 'M' ? 2 ** 20 : m[2] === 'G' ? 2 ** 30 : 1);
      best = Math.max(best ?? 0, b);
    }
  } catch { /* not Linux, or no sysfs: the caller's fallback */ }
  return best;
}

/**
 * Operands for repeated kernel calls that a cache never holds: a float arena at least twice
 * the last-level cache (or `fallbackBytes` where its size is unknown) plus one call's
 * operands, handed out round-robin, so that between two uses of the same floats the other
 * calls have streamed more than the cache through it. A training step's GEMMs see such
 * operands (the weight gradient reads activations saved a whole forward ago, the forward
 * reads weights last touched by the previous step); the same buffers reused call after call
 * sit in L2/L3 and measured K = 128 GEMMs 1.04-1.5× faster than on cold operands.
 */
export class ColdArena {
  readonly data: Float32Array;
  private at = 0;
  constructor(maxCallFloats: number, llcBytes = lastLevelCacheBytes(), fallbackBytes = 256 * 2 ** 20) {
    const floats = Math.ceil((2 * (llcBytes ?? fallbackBytes)) / 4) + maxCallFloats;
    this.data = new Float32Array(floats);
    // Normal values (seeded), one block repeated: filling the whole arena one draw at a time costs seconds.
    const block = randn(Math.min(floats, 1 << 16));
    for (let o = 0; o < floats; o += block.length) this.data.set(block.subarray(0, Math.min(block.length, floats - o)), o);
  }
  /** Offsets of `sizes` consecutive operands (each 64-float aligned) in the next unused stretch, wrapping to the start. */
  take(sizes: number[]): number[] {
    const total = sizes.reduce((a, n) => a + Math.ceil(n / 64) * 64, 0);
    if (total > this.data.length) throw new Error(`ColdArena: a call of ${total} floats exceeds the arena of ${this.data.length}`);
    if (this.at + total > this.data.length) this.at = 0;
    const out: number[] = [];
    for (const n of sizes) { out.push(this.at); this.at += Math.ceil(n / 64) * 64; }
    return out;
  }
}

/**
 * GEMM rates at a grid of shapes for C = A·Bᵀ (NT: a linear layer's forward), A·B (NN: its
 * input gradient) and Aᵀ·B (TN: its weight gradient, accumulated with beta = 1 as
 * ops/matmul.ts does into a parameter gradient). The grid spans tokens m ∈ {512, 2048}
 * and widths n, k ∈ {128, 512, 2048}, plus a 8192-wide vocabulary GEMM in each role's
 * orientation (the LM head: forward n, input gradient k, weight gradient m). Every call
 * takes its A, B and C from a ColdArena (operands out of cache, as a step's are), unless
 * `warm` (the older measurement: one A, B and C for all calls, kept for comparison).
 */
export function gemmTables(reps: number, o: { warm?: boolean } = {}): { nt: GemmPoint[]; nn: GemmPoint[]; tn: GemmPoint[] } {
  const grid: [number, number, number][] = [];
  for (const m of [512, 2048]) for (const n of [128, 512, 2048]) for (const k of [128, 512, 2048]) grid.push([m, n, k]);
  const shapes = { nt: [...grid, [2048, 8192, 512]], nn: [...grid, [2048, 512, 8192]], tn: [...grid, [8192, 512, 2048]] } as const;
  let maxA = 0, maxB = 0, maxC = 0;
  for (const list of Object.values(shapes)) for (const [m, n, k] of list) { maxA = Math.max(maxA, m * k); maxB = Math.max(maxB, k * n); maxC = Math.max(maxC, m * n); }
  const arena = o.warm ? null : new ColdArena(maxA + maxB + maxC + 3 * 64);
  const a = arena ? arena.data : randn(maxA), b = arena ? arena.data : randn(maxB), c = arena ? arena.data : new Float32Array(maxC);
  const jobs: (() => void)[] = [], keys: [keyof typeof shapes, number, number, number][] = [];
  for (const role of ['nt', 'nn', 'tn'] as const) {
    for (const [m, n, k] of shapes[role]) {
      keys.push([role, m, n, k]);
      const at = (): number[] => arena ? arena.take([m * k, k * n, m * n]) : [0, 0, 0];
      if (role === 'nt') jobs.push(() => { const [ao, bo, co] = at(); gemm(false, true, m, n, k, 1, a, ao!, k, b, bo!, k, 0, c, co!, n); });
      else if (role === 'nn') jobs.push(() => { const [ao, bo, co] = at(); gemm(false, false, m, n, k, 1, a, ao!, k, b, bo!, n, 0, c, co!, n); });
      else jobs.push(() => { const [ao, bo, co] = at(); gemm(true, false, m, n, k, 1, a, ao!, m, b, bo!, n, 1, c, co!, n); });
    }
  }
  const ts = interleaved(jobs, reps);
  const out = { nt: [] as GemmPoint[], nn: [] as GemmPoint[], tn: [] as GemmPoint[] };
  keys.forEach(([role, m, n, k], i) => out[role].push([m, n, k, (2 * m * n * k) / ts[i]!]));
  return out;
}

/** FLOPs of attention() at a q shape as the meta trace counts them (ops/meta.ts), so that measured rates and traced work agree by construction. */
function tracedAttentionFlops(shape: number[]): number {
  let flops = 0;
  const prev = setMetaSink({ op: (e: MetaOpEvent) => { if (e.op === 'attention') flops = e.flops; }, alloc: () => undefined });
  try {
    scope(() => { const q = metaTensor(shape, 'float32'); attention(q, q, q, { causal: true }); });
  } finally {
    setMetaSink(prev);
  }
  return flops;
}

/**
 * Attention's share of the GEMM ceiling, forward and backward apart, at sequence lengths
 * T ∈ {128, 256, 512} and head widths D ∈ {32, 64, 128} (causal, the real op under the
 * current precision). The forward runs with recording on, as in training (it keeps the
 * probabilities), on operands laid out as the model's are (nn/gpt.ts): q, k and v distinct,
 * each a (B, H, T, D) permuted view of a (B, T, H, D) head split, so a head's rows sit
 * H·D floats apart (on one contiguous tensor passed as q, k and v the forward measured
 * ~30% faster than on the model's operands, and predicted gpt-tiny's forward attention
 * 1.45× fast against a profiled step). The backward is timed on its own after an untimed
 * forward on one contiguous q (distinct strided leaves would add the permutes' backward
 * copies, which the plan prices as their own ops), over the trace's backward FLOPs (2×
 * the forward). Heads × batch are chosen for ~2^27 forward FLOPs each, in H = 4 heads.
 */
export function attentionTable(peak: number, reps: number): [number, number, number, number][] {
  const shapes: [number, number][] = [];
  for (const T of [128, 256, 512]) for (const D of [32, 64, 128]) shapes.push([T, D]);
  const jobs: Job[] = [], flops: number[] = [];
  const H = 4;
  for (const [T, D] of shapes) {
    const B = Math.max(1, Math.round(2 ** 27 / (T * T * D) / H)), BH = B * H;
    const shape = [1, BH, T, D], qd = randn(BH * T * D, 0.1);
    const qkv = [0, 1, 2].map(() => randn(BH * T * D, 0.1));
    flops.push(tracedAttentionFlops(shape));
    // Forward: distinct q, k, v as the model lays them out; the attention call alone timed.
    jobs.push(() => scope(() => {
      const [q, k, v] = qkv.map((d) => { const l = fromStorage(d, [B, T, H, D], 'float32'); l.requiresGrad = true; return permute(l, [0, 2, 1, 3]); });
      return cpuSeconds(() => { attention(q!, k!, v!, { causal: true }); });
    }));
    jobs.push(() => scope(() => {
      const q = fromStorage(qd, shape, 'float32');
      q.requiresGrad = true;
      const y = attention(q, q, q, { causal: true });
      const t = cpuSeconds(() => backward(sum(y)));
      q.grad?.dispose();
      return t;
    }));
  }
  const ts = interleaved(jobs, reps);
  return shapes.map(([T, D], i) => {
    const tf = ts[2 * i]!, tb = ts[2 * i + 1]!;
    return [T, D, flops[i]! / tf / peak, (2 * flops[i]!) / tb / peak];
  });
}

/**
 * The trainer's optimizer step (train/optim-setup.ts: global gradient norm, fused AdamW,
 * zeroed gradients) over 4.2M parameters in two matrices and a bias (p, g and both moments
 * 67 MB together: past a last-level cache of tens of MiB, as a model's parameters are), in
 * bytes AdamW moves per second.
 */
export function optimizerRate(reps: number): number {
  class Params extends Module {
    constructor() {
      super();
      const mk = (shape: number[]): Tensor => { const t = fromStorage(randn(shape.reduce((a, b) => a * b), 0.02), shape, 'float32'); t.requiresGrad = true; return t; };
      this.param('w1', mk([2048, 1024]));
      this.param('w2', mk([1024, 2048]));
      this.param('b', mk([2048]));
    }
  }
  const model = new Params();
  const params = model.parameters();
  const grads = params.map((p) => randn(p.size, 1e-3));
  params.forEach((p, i) => { p.grad = fromStorage(grads[i]!.slice(), p.shape, 'float32'); });
  const opt = buildOptimizer(model, presetConfig('gpt-tiny'));
  const n = params.reduce((a, p) => a + p.size, 0);
  // Fresh gradients each rep (zeroGrad zeroes them in place), copied in outside the timing.
  const t = interleaved([() => {
    params.forEach((p, i) => (p.grad!.data as Float32Array).set(grads[i]!));
    return cpuSeconds(() => opt.step(1e-4, 1));
  }], reps);
  return (n * ADAMW_BYTES) / t[0]!;
}

/** One op to measure: forward bytes as the meta trace counts them, its inputs (each a leaf that needs a gradient), and the op (it may return several outputs that share one backward walk). */
export interface OpCase { bytes: number; inputs: Tensor[]; fn: (...x: Tensor[]) => Tensor | Tensor[] }

/**
 * Forward and backward rates of real ops under the current precision, in forward bytes per
 * second: the forward (recording, as in training), and the backward timed on its own after
 * an untimed forward, every op's two runs in the same interleaved rounds.
 */
export function opPairRates(cases: Record<string, OpCase>, reps: number): Record<string, { fwd: number; bwd: number }> {
  const grads = new Map<number, Float32Array>();
  const g = (t: Tensor): Tensor => {
    let d = grads.get(t.size);
    if (!d) grads.set(t.size, (d = randn(t.size, 1e-3)));
    return fromStorage(d, t.shape, 'float32');
  };
  const jobs: Job[] = [];
  const names = Object.keys(cases);
  for (const k of names) {
    const { inputs, fn } = cases[k]!;
    const run = (withBackward: boolean) => (): void | number => scope(() => {
      const leaves = inputs.map((t) => { const l = fromStorage(t.data as Float32Array, t.shape, 'float32'); l.requiresGrad = true; return l; });
      const [y, ...more] = [fn(...leaves)].flat();
      let t: number | undefined;
      if (withBackward) {
        const opts = { ...(y!.size === 1 ? {} : { grad: g(y!) }), also: more.map((m) => ({ output: m, grad: g(m) })) };
        t = cpuSeconds(() => backward(y!, opts));
      }
      for (const l of leaves) l.grad?.dispose();
      return t;
    });
    jobs.push(run(false), run(true));
  }
  const ts = interleaved(jobs, reps);
  const out: Record<string, { fwd: number; bwd: number }> = {};
  names.forEach((k, i) => {
    const tf = ts[2 * i]!, tb = ts[2 * i + 1]!;
    out[k] = { fwd: cases[k]!.bytes / tf, bwd: cases[k]!.bytes / tb };
  });
  return out;
}
