// 16-bit operand tensors for mixed-precision GEMMs: casts of activations (any strided
// view whose last dim is unit-stride: one 2-D conversion per leading index) and the
// cached low-precision copies of parameters, made once per optimizer step: the first
// use after markWeightsUpdated() converts, every later use (other micro-batches,
// backward, evaluation) reuses the copy.
import { empty, fromStorage, type Tensor } from '../core/tensor.js';
import { untrack } from '../core/scope.js';
import { to16, type Lowp } from './gemm-lowp.js';
import { dense } from './nn-kernels.js';

/** Contiguous 16-bit copy of x (any float32 view), each element multiplied by `scale` first. */
export function castLowp(x: Tensor, kind: Lowp, scale = 1): Tensor {
  if (x.dtype !== 'float32') throw new Error(`castLowp: expected float32, got ${x.dtype}`);
  const out = empty(x.shape, kind);
  const od = out.data as Uint16Array, xd = x.data as Float32Array;
  const nd = x.ndim, n = x.size;
  if (x.isContiguous() || nd === 0) {
    to16(kind, 1, n, xd, x.offset, n, od, 0, n, scale);
    return out;
  }
  const rows = x.shape[nd - 2] ?? 1, cols = x.shape[nd - 1]!;
  const lead = nd >= 2 ? x.shape.slice(0, -2) : [];
  const nLead = lead.reduce((p, v) => p * v, 1);
  if (x.strides[nd - 1] === 1 && nd >= 2 && nLead <= 4096) {
    const idx = new Array<number>(lead.length).fill(0);
    for (let i = 0; i < nLead; i++) {
      let off = x.offset;
      for (let d = 0; d < lead.length; d++) off += idx[d]! * x.strides[d]!;
      to16(kind, rows, cols, xd, off, x.strides[nd - 2]!, od, i * rows * cols, cols, scale);
      for (let d = lead.length - 1; d >= 0; d--) { if (++idx[d]! < lead[d]!) break; idx[d] = 0; }
    }
    return out;
  }
  const c = dense(x);
  to16(kind, 1, n, c.data as Float32Array, c.offset, n, od, 0, n, scale);
  if (c !== x) c.dispose();
  return out;
}

let version = 0;
let weightCasts = 0;
// Keyed by the parameter's storage array, not the tensor: ZeRO-3 points a parameter at a
// fresh gathered buffer and drops it on release, and the copy must go (be collectable)
// with it rather than keep every parameter resident in 16 bits on every rank.
const shadows = new WeakMap<object, { version: number; offset: number; t: Tensor }>();

/** Parameters changed (optimizer step, checkpoint load): low-precision copies are remade on next use. */
export function markWeightsUpdated(): void {
  version++;
}

/** How many parameter copies were made (tests check "once per step"). */
export function lowpWeightCasts(): number {
  return weightCasts;
}

function isParameter(t: Tensor): boolean {
  return t.isLeaf && t.requiresGrad;
}

/**
 * The 16-bit operand of x: the per-step cached copy for parameters, a fresh cast
 * otherwise. The result must be disposed by the caller (for parameters it is a view of
 * the cached copy, so disposing it leaves the copy alive).
 */
export function lowpOperand(x: Tensor, kind: Lowp): Tensor {
  if (!isParameter(x) || !x.isContiguous()) return castLowp(x, kind);
  const key = x.data;
  const s = shadows.get(key);
  let t = s && s.t.dtype === kind && s.offset === x.offset && s.t.ndim === x.ndim && s.t.shape.every((d, i) => d === x.shape[i]) ? s.t : null;
  if (!t || s!.version !== version) {
    if (!t) {
      t = fromStorage(new Uint16Array(x.size), x.shape, kind);
      untrack(t);
      t.keep();
    }
    const c = castLowp(x, kind);
    (t.data as Uint16Array).set(c.data as Uint16Array);
    c.dispose();
    weightCasts++;
    shadows.set(key, { version, offset: x.offset, t });
  }
  return t.view(t.shape, t.strides, t.offset);
}
