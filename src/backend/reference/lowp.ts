// Reference (and oracle) for the strided 2-D conversions of mixed-precision GEMM
// operands in native/cast.c: round-to-nearest-even through src/core/dtype.ts.
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../core/dtype.js';
import { attnSoftmax, attnSoftmaxBwd } from './nn.js';

export type Lowp = 'bfloat16' | 'float16';

/** y[r, i] = round16(x[r, i] · scale) for a rows × cols matrix (leading dims ldx, ldy). */
export function to16Ref(kind: Lowp, rows: number, cols: number, x: Float32Array, xOff: number, ldx: number,
  y: Uint16Array, yOff: number, ldy: number, scale: number): void {
  const f = kind === 'bfloat16' ? f32ToBf16 : f32ToF16;
  const s = Math.fround(scale);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) y[yOff + r * ldy + i] = f(Math.fround(x[xOff + r * ldx + i]! * s));
  }
}

export function from16Ref(kind: Lowp, rows: number, cols: number, x: Uint16Array, xOff: number, ldx: number,
  y: Float32Array, yOff: number, ldy: number): void {
  const f = kind === 'bfloat16' ? bf16ToF32 : f16ToF32;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) y[yOff + r * ldy + i] = f(x[xOff + r * ldx + i]!);
  }
}

/**
 * Attention softmax with a 16-bit output: P16 = round16(softmax(scale · S)) per row of
 * mats × Tq × Tk, causal mask applied (masked entries 0). S is fp32 scratch.
 */
export function attnSoftmax16Ref(S: Float32Array, P16: Uint16Array, mats: number, Tq: number, Tk: number, scale: number, causal: boolean, kind: Lowp): void {
  attnSoftmax(S, mats, Tq, Tk, scale, causal);
  to16Ref(kind, 1, mats * Tq * Tk, S, 0, mats * Tq * Tk, P16, 0, mats * Tq * Tk, 1);
}

/** In place on dP: dS = alpha · P ∘ (dP − rowsum(dP ∘ P)), P read from 16 bits, fp32 math. */
export function attnSoftmaxBwd16Ref(P16: Uint16Array, dP: Float32Array, mats: number, Tq: number, Tk: number, alpha: number, causal: boolean, kind: Lowp): void {
  const n = mats * Tq * Tk, P = new Float32Array(n);
  from16Ref(kind, 1, n, P16, 0, n, P, 0, n);
  attnSoftmaxBwd(P, dP, mats, Tq, Tk, alpha, causal);
}
