// Reference (and oracle) for native/nn-lowp.c: the bf16 saved-activation variants of the
// fused kernels, written as "the fp32 reference kernel, plus the bf16 copy" (forward) and
// "widen the bf16 copy, then the fp32 reference kernel" (backward).
import { bf16ToF32, f32ToBf16 } from '../../core/dtype.js';
import * as ref from './nn.js';

const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715;

function pack(x: Float32Array, h: Uint16Array, n: number): void {
  for (let i = 0; i < n; i++) h[i] = f32ToBf16(x[i]!);
}

function widen(h: Uint16Array, n: number): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = bf16ToF32(h[i]!);
  return x;
}

export function geluFwdBf16PackRef(n: number, x: Float32Array, y: Float32Array, xh: Uint16Array): void {
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    y[i] = 0.5 * v * (1 + Math.tanh(GELU_K * (v + GELU_C * v * v * v)));
  }
  pack(x, xh, n);
}

export function geluBwdBf16InRef(n: number, xh: Uint16Array, dy: Float32Array, dx: Float32Array, acc: boolean): void {
  for (let i = 0; i < n; i++) {
    const xv = bf16ToF32(xh[i]!), x2 = xv * xv;
    const t = Math.tanh(GELU_K * (xv + GELU_C * x2 * xv));
    const d = dy[i]! * (0.5 * (1 + t) + 0.5 * xv * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * x2));
    dx[i] = acc ? dx[i]! + d : d;
  }
}

export function layerNormFwdBf16PackRef(x: Float32Array, w: Float32Array, b: Float32Array | null, y: Float32Array, mean: Float32Array, rstd: Float32Array,
  xh: Uint16Array, rows: number, C: number, eps: number): void {
  ref.layerNormFwd(x, w, b, y, mean, rstd, rows, C, eps);
  pack(x, xh, rows * C);
}

export function layerNormBwdBf16InRef(dy: Float32Array, xh: Uint16Array, w: Float32Array, mean: Float32Array, rstd: Float32Array,
  dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null, rows: number, C: number, acc: boolean): void {
  ref.layerNormBwd(dy, widen(xh, rows * C), w, mean, rstd, dx, dw, db, rows, C, acc);
}

export function crossEntropyFwdBf16PackRef(logits: Float32Array, targets: Int32Array, lse: Float32Array, lh: Uint16Array, rows: number, V: number, ignoreIndex: number): number {
  pack(logits, lh, rows * V);
  return ref.crossEntropyFwd(logits, targets, lse, rows, V, ignoreIndex);
}

export function crossEntropyBwdBf16InRef(lh: Uint16Array, targets: Int32Array, lse: Float32Array, dlogits: Float32Array, rows: number, V: number,
  ignoreIndex: number, scale: number, acc: boolean): void {
  ref.crossEntropyBwd(widen(lh, rows * V), targets, lse, dlogits, rows, V, ignoreIndex, scale, acc);
}

export function softmaxFwdBf16PackRef(x: Float32Array, y: Float32Array, yh: Uint16Array, rows: number, cols: number): void {
  ref.softmaxFwd(x, y, rows, cols);
  pack(y, yh, rows * cols);
}

export function softmaxBwdBf16InRef(yh: Uint16Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number, acc: boolean): void {
  ref.softmaxBwd(widen(yh, rows * cols), dy, dx, rows, cols, acc);
}
