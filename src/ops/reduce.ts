// Reductions: sum, mean, max (with first-argmax gradient) and argmax. Sums accumulate
// in double (native and reference alike). This module also installs the fast
// sumToShape used by accumulateGrad to reduce broadcast gradients.
import { Tensor, empty } from '../core/tensor.js';
import { normAxis, shapeStr } from '../core/layout.js';
import { record } from '../autograd/tape.js';
import { setSumToShape } from '../autograd/accumulate.js';
import { copyStrided, maxAlong, sumInto } from '../backend/basic-kernels.js';
import type { FArr } from '../backend/reference/basic.js';
import { assertFloat } from './elementwise.js';

/** Sorted, de-duplicated, non-negative axes; undefined means all axes. */
export function normAxes(axes: number | readonly number[] | undefined, ndim: number, op: string): number[] {
  if (axes === undefined) return Array.from({ length: ndim }, (_, i) => i);
  const list = typeof axes === 'number' ? [axes] : axes;
  const out = list.map((a) => normAxis(a, ndim, op));
  out.sort((a, b) => a - b);
  for (let i = 1; i < out.length; i++) if (out[i] === out[i - 1]) throw new Error(`${op}: axis ${out[i]} repeated`);
  return out;
}

function reducedShape(shape: readonly number[], reduced: readonly boolean[], keepDims: boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (!reduced[i]) out.push(shape[i]!);
    else if (keepDims) out.push(1);
  }
  return out;
}

function sumLike(name: 'sum' | 'mean', x: Tensor, axes: number | readonly number[] | undefined, keepDims: boolean): Tensor {
  assertFloat(x, name);
  const ax = normAxes(axes, x.ndim, name);
  const reduced = new Array<boolean>(x.ndim).fill(false);
  let count = 1;
  for (const a of ax) { reduced[a] = true; count *= x.shape[a]!; }
  const out = empty(reducedShape(x.shape, reduced, keepDims), x.dtype);
  sumInto(out.data as FArr, 0, x, reduced, name === 'mean' ? 1 / count : 1);
  return record(name, { axes: ax, keepDims }, [x], out);
}

/** Sum over `axes` (a number, a list, or all when omitted). */
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return sumLike('sum', x, axes, keepDims);
}

/** Mean over `axes` (a number, a list, or all when omitted). */
export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return sumLike('mean', x, axes, keepDims);
}

function maxCore(x: Tensor, axis: number, keepDims: boolean, op: string): { vals: Tensor; idx: Tensor; axis: number } {
  assertFloat(x, op);
  const a = normAxis(axis, x.ndim, op);
  const reduced = x.shape.map((_, i) => i === a);
  const shape = reducedShape(x.shape, reduced, keepDims);
  let src = x;
  if (!x.isContiguous()) {
    src = empty(x.shape, x.dtype);
    copyStrided(src, x);
  }
  const vals = empty(shape, x.dtype);
  const idx = empty(shape, 'int32');
  try {
    maxAlong(src, a, vals.data as FArr, idx.data as Int32Array);
  } finally {
    if (src !== x) src.dispose();
  }
  return { vals, idx, axis: a };
}

/** Maximum along one axis; the gradient flows to the first maximal element. */
export function max(x: Tensor, axis: number, keepDims = false): Tensor {
  const { vals, idx, axis: a } = maxCore(x, axis, keepDims, 'max');
  return record('max', { axis: a, keepDims }, [x], vals, [idx]);
}

/** Index (int32) of the first maximum along one axis. Not differentiable. */
export function argmax(x: Tensor, axis: number, keepDims = false): Tensor {
  const { vals, idx } = maxCore(x, axis, keepDims, 'argmax');
  vals.dispose();
  return idx;
}

/** Sums g down to `shape` (the inverse of broadcasting) with the native reduction kernel. */
export function fastSumToShape(g: Tensor, shape: readonly number[]): Tensor {
  const lead = g.ndim - shape.length;
  const bad = () => new Error(`sumToShape: cannot reduce ${shapeStr(g.shape)} to ${shapeStr(shape)}`);
  if (lead < 0) throw bad();
  const reduced = new Array<boolean>(g.ndim);
  for (let i = 0; i < g.ndim; i++) {
    if (i < lead) { reduced[i] = true; continue; }
    const s = shape[i - lead]!, d = g.shape[i]!;
    if (s !== d && s !== 1) throw bad();
    reduced[i] = s === 1 && d !== 1;
  }
  if (g.dtype !== 'float32' && g.dtype !== 'float64') throw new Error(`sumToShape: float tensor expected, got ${g.dtype}`);
  const out = empty(shape, g.dtype);
  sumInto(out.data as FArr, 0, g, reduced, 1);
  return out;
}

setSumToShape(fastSumToShape);
