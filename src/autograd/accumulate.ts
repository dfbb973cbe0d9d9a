// Gradient accumulation (llm.c style: backward adds into the input's gradient).
// Broadcast inputs receive the gradient summed over the broadcast dims.
import { type Tensor, zeros, forEachIndex } from '../core/tensor.js';
import { untrack } from '../core/scope.js';
import { numel, sameShape, shapeStr, contiguousStrides } from '../core/layout.js';
import { axpy } from '../backend/blas.js';

/** The gradient buffer of `t`, created zero-filled on first use. Leaf grads outlive scopes. */
export function ensureGrad(t: Tensor): Tensor {
  if (!t.grad) {
    const g = zeros(t.shape, t.dtype);
    untrack(g);
    g.kept = true;
    t.grad = g;
  }
  return t.grad;
}

/**
 * t.grad += g, reducing g over broadcast dims when g's shape is the broadcast of t's.
 * `owned` lets the first contribution be adopted without a copy (the caller gives g up).
 */
export function accumulateGrad(t: Tensor, g: Tensor, owned = false): void {
  if (!t.requiresGrad) {
    if (owned) g.dispose();
    return;
  }
  if (!sameShape(t.shape, g.shape)) {
    const reduced = sumToShape(g, t.shape);
    if (owned) g.dispose();
    accumulateGrad(t, reduced, true);
    return;
  }
  if (!t.grad && owned && g.isContiguous() && g.offset === 0 && g.dtype === t.dtype && g.box.refs === 1) {
    untrack(g);
    g.kept = true;
    t.grad = g;
    return;
  }
  const dst = ensureGrad(t);
  if (g.isContiguous() && g.dtype === dst.dtype && (g.data instanceof Float32Array || g.data instanceof Float64Array)) {
    axpy(dst.size, 1, g.data, g.offset, dst.data as Float32Array | Float64Array, 0);
  } else {
    const d = dst.data, s = g.data;
    forEachIndex(g.shape, g.strides, g.offset, (src, i) => { d[i]! += s[src]!; });
  }
  if (owned) g.dispose();
}

/**
 * Sums `g` down to `shape` (the inverse of NumPy broadcasting). Reference loop: the
 * elementwise kernels module replaces the hot cases through setSumToShape.
 */
export let sumToShape = (g: Tensor, shape: readonly number[]): Tensor => {
  const nd = g.ndim, lead = nd - shape.length;
  if (lead < 0) throw new Error(`sumToShape: cannot reduce ${shapeStr(g.shape)} to ${shapeStr(shape)}`);
  for (let i = 0; i < shape.length; i++) {
    const s = shape[i]!, d = g.shape[lead + i]!;
    if (s !== d && s !== 1) throw new Error(`sumToShape: cannot reduce ${shapeStr(g.shape)} to ${shapeStr(shape)}`);
  }
  const out = zeros(shape, g.dtype);
  const outStrides = contiguousStrides(shape);
  // Strides into `out` for each dim of g: 0 where the dim is reduced.
  const map = g.shape.map((d, i) => (i < lead || shape[i - lead] === 1 ? 0 : outStrides[i - lead]!));
  const o = out.data, s = g.data;
  if (numel(g.shape) === 0) return out;
  // Walk g and out together.
  const idx = new Array<number>(nd).fill(0);
  let src = g.offset, dst = 0;
  const n = numel(g.shape);
  for (let i = 0; i < n; i++) {
    o[dst]! += s[src]!;
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      src += g.strides[d]!;
      dst += map[d]!;
      if (idx[d]! < g.shape[d]!) break;
      src -= g.strides[d]! * g.shape[d]!;
      dst -= map[d]! * g.shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
};

export function setSumToShape(fn: (g: Tensor, shape: readonly number[]) => Tensor): void {
  sumToShape = fn;
}
