// Kernel table of the NN op family: float32 arrays of at least nativeMinElements()
// elements go to native/nn.c, everything else (float64, tiny tensors, no library)
// to the TypeScript references. Arrays start at element 0: ops pass subarrays.
import { nativeFor } from './dispatch.js';
import { nativeNn, type NativeNn } from './native-nn.js';
import * as ref from './reference/nn.js';
import { empty, zeros, type Tensor } from '../core/tensor.js';
import { untrack } from '../core/scope.js';

export type F = ref.F;

function nat(a: F, n: number): NativeNn | null {
  if (!(a instanceof Float32Array) || !nativeFor('float32', n)) return null;
  return nativeNn();
}

export function softmaxFwd(x: F, y: F, rows: number, cols: number): void {
  const k = nat(x, rows * cols);
  if (k) k.softmaxFwd(x, y, rows, cols);
  else ref.softmaxFwd(x, y, rows, cols);
}

export function logSoftmaxFwd(x: F, y: F, rows: number, cols: number): void {
  const k = nat(x, rows * cols);
  if (k) k.logSoftmaxFwd(x, y, rows, cols);
  else ref.logSoftmaxFwd(x, y, rows, cols);
}

export function softmaxBwd(y: F, dy: F, dx: F, rows: number, cols: number, acc = true): void {
  const k = nat(y, rows * cols);
  if (k) k.softmaxBwd(y, dy, dx, rows, cols, acc ? 1 : 0);
  else ref.softmaxBwd(y, dy, dx, rows, cols, acc);
}

export function logSoftmaxBwd(y: F, dy: F, dx: F, rows: number, cols: number, acc = true): void {
  const k = nat(y, rows * cols);
  if (k) k.logSoftmaxBwd(y, dy, dx, rows, cols, acc ? 1 : 0);
  else ref.logSoftmaxBwd(y, dy, dx, rows, cols, acc);
}

export function crossEntropyFwd(logits: F, targets: Int32Array, lse: F, rows: number, V: number, ignoreIndex: number): number {
  const k = nat(logits, rows * V);
  if (k) return k.crossEntropyFwd(logits, targets, lse, rows, V, ignoreIndex) as number;
  return ref.crossEntropyFwd(logits, targets, lse, rows, V, ignoreIndex);
}

export function crossEntropyBwd(logits: F, targets: Int32Array, lse: F, dlogits: F, rows: number, V: number, ignoreIndex: number, scale: number, acc = true): void {
  const k = nat(logits, rows * V);
  if (k) k.crossEntropyBwd(logits, targets, lse, dlogits, rows, V, ignoreIndex, scale, acc ? 1 : 0);
  else ref.crossEntropyBwd(logits, targets, lse, dlogits, rows, V, ignoreIndex, scale, acc);
}

export function layerNormFwd(x: F, w: F, b: F | null, y: F, mean: F, rstd: F, rows: number, C: number, eps: number): void {
  const k = nat(x, rows * C);
  if (k) k.layerNormFwd(x, w, b, y, mean, rstd, rows, C, eps);
  else ref.layerNormFwd(x, w, b, y, mean, rstd, rows, C, eps);
}

export function layerNormBwd(dy: F, x: F, w: F, mean: F, rstd: F, dx: F | null, dw: F | null, db: F | null, rows: number, C: number, acc = true): void {
  const k = nat(x, rows * C);
  if (k) k.layerNormBwd(dy, x, w, mean, rstd, dx, dw, db, rows, C, acc ? 1 : 0);
  else ref.layerNormBwd(dy, x, w, mean, rstd, dx, dw, db, rows, C, acc);
}

export function rmsNormFwd(x: F, w: F, y: F, rstd: F, rows: number, C: number, eps: number): void {
  const k = nat(x, rows * C);
  if (k) k.rmsNormFwd(x, w, y, rstd, rows, C, eps);
  else ref.rmsNormFwd(x, w, y, rstd, rows, C, eps);
}

export function rmsNormBwd(dy: F, x: F, w: F, rstd: F, dx: F | null, dw: F | null, rows: number, C: number, acc = true): void {
  const k = nat(x, rows * C);
  if (k) k.rmsNormBwd(dy, x, w, rstd, dx, dw, rows, C, acc ? 1 : 0);
  else ref.rmsNormBwd(dy, x, w, rstd, dx, dw, rows, C, acc);
}

export function embeddingFwd(w: F, ldw: number, idx: Int32Array, out: F, n: number, C: number): void {
  const k = nat(w, n * C);
  if (k) k.embeddingFwd(w, ldw, idx, out, n, C);
  else ref.embeddingFwd(w, ldw, idx, out, n, C);
}

export function embeddingBwd(dout: F, idx: Int32Array, dw: F, n: number, C: number): void {
  const k = nat(dout, n * C);
  if (k) k.embeddingBwd(dout, idx, dw, n, C);
  else ref.embeddingBwd(dout, idx, dw, n, C);
}

export function dropoutFwd(x: F, y: F, mask: Int32Array, n: number, seed: number, threshold: number, scale: number): void {
  const k = nat(x, n);
  if (k) k.dropoutFwd(x, y, mask, n, seed >>> 0, threshold, scale);
  else ref.dropoutFwd(x, y, mask, n, seed >>> 0, threshold, scale);
}

export function dropoutBwd(dy: F, mask: Int32Array, dx: F, n: number, scale: number, acc = true): void {
  const k = nat(dy, n);
  if (k) k.dropoutBwd(dy, mask, dx, n, scale, acc ? 1 : 0);
  else ref.dropoutBwd(dy, mask, dx, n, scale, acc);
}

export function attnSoftmax(S: F, mats: number, Tq: number, Tk: number, scale: number, causal: boolean): void {
  const k = nat(S, mats * Tq * Tk);
  if (k) k.attnSoftmax(S, mats, Tq, Tk, scale, causal ? 1 : 0);
  else ref.attnSoftmax(S, mats, Tq, Tk, scale, causal);
}

export function attnSoftmaxBwd(P: F, dP: F, mats: number, Tq: number, Tk: number, alpha: number, causal: boolean): void {
  const k = nat(P, mats * Tq * Tk);
  if (k) k.attnSoftmaxBwd(P, dP, mats, Tq, Tk, alpha, causal ? 1 : 0);
  else ref.attnSoftmaxBwd(P, dP, mats, Tq, Tk, alpha, causal);
}

export function biasGrad(dy: F, db: F, rows: number, cols: number, ld: number): void {
  const k = nat(dy, rows * cols);
  if (k) k.biasGrad(dy, db, rows, cols, ld);
  else ref.biasGrad(dy, db, rows, cols, ld);
}

export function fillRows(y: F, bias: F, rows: number, cols: number, ld: number): void {
  const k = nat(y, rows * cols);
  if (k) k.fillRows(y, bias, rows, cols, ld);
  else ref.fillRows(y, bias, rows, cols, ld);
}

// ---- tensor-level helpers shared by ops/matmul, ops/nn, ops/attention ----

/** The float storage of `t` from its offset on (no copy). */
export function floatData(t: Tensor): F {
  const d = t.data;
  if (!(d instanceof Float32Array || d instanceof Float64Array)) throw new Error(`expected a float32 or float64 tensor, got ${t.dtype}`);
  return t.offset ? d.subarray(t.offset) : d;
}

/** Int32 storage of a contiguous int32 tensor from its offset on, or a packed copy when strided. */
export function int32Data(t: Tensor, where: string): Int32Array {
  if (t.dtype !== 'int32') throw new Error(`${where}: indices must be int32, got ${t.dtype}`);
  const d = t.data as Int32Array;
  if (t.isContiguous()) return d.subarray(t.offset, t.offset + t.size);
  const out = new Int32Array(t.size);
  copyStrided(d, t.offset, t.shape, t.strides, out);
  return out;
}

/** dst[0..numel) = src read row-major through (shape, strides, offset). Inner dim as a plain loop. */
export function copyStrided(src: ArrayLike<number>, off: number, shape: readonly number[], strides: readonly number[], dst: { [i: number]: number }): void {
  const nd = shape.length;
  if (nd === 0) { dst[0] = src[off]!; return; }
  let n = 1;
  for (const d of shape) n *= d;
  if (n === 0) return;
  const inner = shape[nd - 1]!, is = strides[nd - 1]!;
  const idx = new Array<number>(nd).fill(0);
  let base = off;
  for (let o = 0; o < n; o += inner) {
    for (let j = 0, s = base; j < inner; j++, s += is) dst[o + j] = src[s]!;
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]!++;
      base += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

/** `t` itself when contiguous, else a contiguous copy (not recorded; the caller disposes it when !== t). */
export function dense(t: Tensor): Tensor {
  if (t.isContiguous()) return t;
  const out = empty(t.shape, t.dtype);
  copyStrided(t.data, t.offset, t.shape, t.strides, out.data);
  return out;
}

/**
 * The gradient buffer of `t` for a kernel that accumulates. When `t` has no gradient
 * yet and `writesAll` (the caller's first write covers every element exactly once),
 * the buffer is left uninitialised and `fresh` is true: the caller must then
 * overwrite (GEMM beta = 0) instead of accumulate. Otherwise it is ensureGrad's.
 */
export function gradTarget(t: Tensor, writesAll: boolean): { g: Tensor; fresh: boolean } {
  if (t.grad) return { g: t.grad, fresh: false };
  const g = writesAll ? empty(t.shape, t.dtype) : zeros(t.shape, t.dtype);
  untrack(g);
  g.kept = true;
  t.grad = g;
  return { g, fresh: writesAll };
}
