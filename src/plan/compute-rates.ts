// The compute rates of a device as the planner prices a traced op: GEMMs by shape and by
// which of a linear layer's three GEMMs it is (forward, input gradient, weight gradient:
// BLAS runs them with different transpositions, and on this machine OpenBLAS's NN and TN
// kernels are up to 1.6× slower than NT at the LM head's shapes), attention by shape and
// phase (the forward and backward kernels reach different shares of the ceiling, and the
// share falls with the head width), and the optimizer step from its own measured rate.
// A figure a cluster file lacks (the published clusters list peaks and efficiencies only)
// falls back to the coarse one: NT table, or peak × efficiency; attention's one
// efficiency; AdamW's bytes at memory bandwidth.
import type { ClusterSpec } from './cluster.js';

export type GemmPoint = [number, number, number, number];
/** Which GEMM of `y = op(A)·op(B)`: its forward, or the backward's dA or dB. */
export type GemmRole = 'forward' | 'gradA' | 'gradB';

/** Rate at (m, n, k) interpolated from measured points: inverse distance (squared, squared) in log-shape space, geometric mean of the rates. */
export function interpShape(pts: readonly GemmPoint[], m: number, n: number, k: number): number {
  let wsum = 0, rsum = 0;
  for (const [pm, pn, pk, r] of pts) {
    const d2 = Math.log(m / pm) ** 2 + Math.log(n / pn) ** 2 + Math.log(k / pk) ** 2;
    if (d2 < 1e-12) return r;
    const w = 1 / (d2 * d2);
    wsum += w; rsum += w * Math.log(r);
  }
  return Math.exp(rsum / wsum);
}

/**
 * GEMM FLOP/s at a shape for a role. Athanor's linear layers run the forward as NT
 * (x·Wᵀ), dA = G·W as NN and dB = Gᵀ·X as TN (ops/matmul.ts), so the measured NT table
 * prices the forward, and the NN / TN tables (where measured) the backward's two GEMMs.
 */
export function gemmRateFn(c: ClusterSpec, peak: number): (m: number, n: number, k: number, role?: GemmRole) => number {
  const t = c.device.gemmTable;
  if (!t) return () => peak * c.device.gemmEfficiency.value;
  return (m, n, k, role = 'forward') => {
    const pts = role === 'gradA' ? t.nn ?? t.points : role === 'gradB' ? t.tn ?? t.points : t.points;
    return interpShape(pts, m, n, k);
  };
}

/**
 * Attention's share of the GEMM ceiling for a traced attention op (dims [B·H, Tq, Tk, D]):
 * [forward, backward] from the measured table, else the one efficiency for both phases
 * (also for an op traced without dims).
 */
export function attentionEfficiencyFn(c: ClusterSpec, lowp: boolean): (dims: readonly number[] | undefined, phase: 'forward' | 'backward') => number {
  const table = lowp ? c.device.lowpKernels?.attentionTable : c.device.attentionTable?.points;
  const one = (lowp ? c.device.lowpKernels?.attentionEfficiency : undefined) ?? c.device.attentionEfficiency.value;
  if (!table?.length) return () => one;
  // [T, D, fwd, bwd]: interpolated in (log T, log D) with the GEMM table's weights (T stands for √(Tq·Tk)).
  return (dims, phase) => {
    if (!dims || dims.length < 4) return one;
    const [, tq, tk, d] = dims as [number, number, number, number];
    return interpShape(table.map(([pt, pd, f, b]) => [pt, pd, 1, phase === 'forward' ? f : b] as GemmPoint), Math.sqrt(tq * tk), d, 1);
  };
}

/**
 * Seconds of the optimizer step over `elements` parameters of a shard: the trainer's
 * global-norm pass, the fused AdamW kernel and the zeroing of gradients, measured as one
 * rate in the bytes AdamW moves (weights, gradients and both moments: 4 read, 3 written,
 * 4 bytes each); without it, those bytes at memory bandwidth.
 */
export function optimizerSeconds(c: ClusterSpec, elements: number): number {
  return (elements * ADAMW_BYTES) / (c.device.optimizerRate?.value ?? c.device.memBandwidth.value);
}

/** Bytes AdamW moves per fp32 parameter element (p, g, m, v read; p, m, v written). */
export const ADAMW_BYTES = 4 * 7;

/**
 * An op's own measured forward/backward rates (forward bytes per second), if any. Under
 * Athanor's mixed precision: the 16-bit path's rates where measured; an op without a
 * 16-bit path (absent from lowpKernels.opRates) runs its fp32 kernel; calibrations that
 * measured only whole classes under bf16 (lowpKernels.rates, no opRates) keep the class.
 */
export function opRateFor(c: ClusterSpec, lowp: boolean, op: string, cls: string): { fwd: number; bwd: number } | undefined {
  const fp32 = c.device.opRates?.rates[op];
  if (!lowp) return fp32;
  const lk = c.device.lowpKernels;
  if (lk?.opRates) return lk.opRates[op] ?? fp32;
  return lk?.rates[cls] ? undefined : fp32;
}
