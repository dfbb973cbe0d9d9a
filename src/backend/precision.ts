// Compute precision of the GEMMs (train.precision): fp32, or bf16 / fp16 operands with
// fp32 accumulation (mixed precision). Master weights, gradients, optimizer state and
// the numerically sensitive kernels stay fp32; matmul and attention read this setting
// and run their forward GEMM and both backward GEMMs on 16-bit operands.
//
// fp16 uses a loss scale: where a gradient enters fp16 (the backward GEMM operands) it
// is multiplied by the scale, and the GEMM's alpha divides it out again, so fp32
// gradients, clipping and every optimizer (DP, ZeRO) see unscaled values. An fp16
// overflow shows up as Inf/NaN in the gradients, which the optimizers' non-finite check
// already turns into a skipped step; train/loss-scaler.ts then backs the scale off.
import type { Lowp } from './reference/lowp.js';

export type Precision = 'fp32' | 'bf16' | 'fp16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16', 'fp16'];

let current: Precision = 'fp32';
let lossScale = 1;

export function setPrecision(p: Precision): void {
  if (!PRECISIONS.includes(p)) throw new Error(`precision: expected one of ${PRECISIONS.join(', ')}, got '${p}'`);
  current = p;
}

export function getPrecision(): Precision {
  return current;
}

/** The 16-bit operand type of the current precision, or null for fp32. */
export function lowpKind(): Lowp | null {
  return current === 'bf16' ? 'bfloat16' : current === 'fp16' ? 'float16' : null;
}

/** Runs fn with another precision, restoring the previous one after. */
export function withPrecision<R>(p: Precision, fn: () => R): R {
  const prev = current;
  setPrecision(p);
  try {
    return fn();
  } finally {
    current = prev;
  }
}

/** Loss scale applied to gradients entering fp16 GEMM operands (1 for bf16 and fp32). */
export function setLossScale(s: number): void {
  if (!(s > 0) || !Number.isFinite(s)) throw new Error(`loss scale must be a positive finite number, got ${s}`);
  lossScale = s;
}

export function gradOperandScale(): number {
  return current === 'fp16' ? lossScale : 1;
}
