// Layout ops. reshape (of a contiguous tensor), permute/transpose, expand and slice
// return views that share storage; contiguous() copies only when the layout needs it;
// concat copies; split returns slices; gather indexes along an axis.
import { Tensor, empty } from '../core/tensor.js';
import { contiguousStrides, normAxis, numel, shapeStr, type Shape } from '../core/layout.js';
import { record } from '../autograd/tape.js';
import { copyStrided, gatherInto } from '../backend/basic-kernels.js';
import { NO_ATTRS } from './elementwise.js';

/** Resolves one -1 in `shape` against `n` elements. */
export function resolveShape(shape: Shape, n: number, op: string): number[] {
  let infer = -1, known = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    if (d === -1) {
      if (infer >= 0) throw new Error(`${op}: only one dimension can be -1 in ${shapeStr(shape)}`);
      infer = i;
    } else if (!Number.isInteger(d) || d < 0) {
      throw new Error(`${op}: invalid shape ${shapeStr(shape)}`);
    } else known *= d;
  }
  const out = [...shape];
  if (infer >= 0) {
    if (known === 0 || n % known !== 0) throw new Error(`${op}: cannot infer -1 in ${shapeStr(shape)} for ${n} elements`);
    out[infer] = n / known;
  } else if (known !== n) {
    throw new Error(`${op}: shape ${shapeStr(shape)} (${known} elements) does not match ${n} elements`);
  }
  return out;
}

/** Same elements, new shape (one dim may be -1). A view when x is contiguous, else a copy. */
export function reshape(x: Tensor, shape: Shape): Tensor {
  const sh = resolveShape(shape, x.size, `reshape ${shapeStr(x.shape)}`);
  let out: Tensor;
  if (x.isContiguous()) {
    out = x.view(sh, contiguousStrides(sh), x.offset);
  } else {
    out = empty(sh, x.dtype);
    copyStrided({ data: out.data, offset: 0, shape: x.shape, strides: contiguousStrides(x.shape) }, x);
  }
  return record('reshape', { shape: sh }, [x], out);
}

/** Inserts a size-1 dim at `axis` (a view). */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.ndim + 1, 'unsqueeze');
  const sh = [...x.shape];
  sh.splice(a, 0, 1);
  return reshape(x, sh);
}

/** Removes the size-1 dim at `axis`, or all size-1 dims when axis is omitted (a view when contiguous). */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normAxis(axis, x.ndim, 'squeeze');
  if (x.shape[a] !== 1) throw new Error(`squeeze: dim ${axis} has size ${x.shape[a]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== a));
}

/** Reorders dims: out.shape[i] = x.shape[dims[i]]. A view. */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const nd = x.ndim;
  if (dims.length !== nd) throw new Error(`permute: ${dims.length} dims given for a ${nd}-d tensor`);
  const d = dims.map((v) => normAxis(v, nd, 'permute'));
  const seen = new Array<boolean>(nd).fill(false);
  for (const v of d) {
    if (seen[v]) throw new Error(`permute: [${dims.join(', ')}] is not a permutation`);
    seen[v] = true;
  }
  const out = x.view(d.map((i) => x.shape[i]!), d.map((i) => x.strides[i]!), x.offset);
  return record('permute', { dims: d }, [x], out);
}

/** Swaps two dims (a view). */
export function transpose(x: Tensor, d0 = -2, d1 = -1): Tensor {
  const a = normAxis(d0, x.ndim, 'transpose'), b = normAxis(d1, x.ndim, 'transpose');
  const dims = Array.from({ length: x.ndim }, (_, i) => i);
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

/** Broadcasts to `shape` (leading dims may be added; -1 keeps a dim) without copying: stride 0 on expanded dims. */
export function expand(x: Tensor, shape: Shape): Tensor {
  const lead = shape.length - x.ndim;
  if (lead < 0) throw new Error(`expand: cannot expand ${shapeStr(x.shape)} to fewer dims ${shapeStr(shape)}`);
  const sh = new Array<number>(shape.length);
  const st = new Array<number>(shape.length);
  for (let i = 0; i < shape.length; i++) {
    const want = shape[i]!;
    if (i < lead) {
      if (want < 0) throw new Error(`expand: -1 not allowed for the new leading dim ${i} in ${shapeStr(shape)}`);
      sh[i] = want;
      st[i] = 0;
      continue;
    }
    const have = x.shape[i - lead]!;
    const w = want === -1 ? have : want;
    if (have !== w && have !== 1) throw new Error(`expand: dim ${i} of ${shapeStr(x.shape)} has size ${have}, cannot expand to ${w} (target ${shapeStr(shape)})`);
    sh[i] = w;
    st[i] = have === w ? x.strides[i - lead]! : 0;
  }
  const out = x.view(sh, st, x.offset);
  return record('expand', { shape: sh }, [x], out);
}

/** Elements [start, end) along `axis` (negative values count from the end; clamped like Python). A view. */
export function slice(x: Tensor, axis: number, start: number, end?: number): Tensor {
  const a = normAxis(axis, x.ndim, 'slice');
  const n = x.shape[a]!;
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
  const s = clamp(start);
  const e = Math.max(s, clamp(end ?? n));
  const sh = [...x.shape];
  sh[a] = e - s;
  const out = x.view(sh, x.strides, x.offset + s * x.strides[a]!);
  return record('slice', { axis: a, start: s, end: e }, [x], out);
}

/** x itself when already contiguous, else a contiguous copy. */
export function contiguous(x: Tensor): Tensor {
  if (x.isContiguous()) return x;
  const out = empty(x.shape, x.dtype);
  copyStrided(out, x);
  return record('contiguous', NO_ATTRS, [x], out);
}

/** Joins tensors along `axis` (all other dims equal). */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error('concat: no tensors given');
  const first = xs[0]!;
  const a = normAxis(axis, first.ndim, 'concat');
  let total = 0;
  for (const [k, x] of xs.entries()) {
    if (x.dtype !== first.dtype) throw new Error(`concat: tensor ${k} has dtype ${x.dtype}, tensor 0 has ${first.dtype}`);
    if (x.ndim !== first.ndim || x.shape.some((d, i) => i !== a && d !== first.shape[i])) {
      throw new Error(`concat: tensor ${k} has shape ${shapeStr(x.shape)}, incompatible with ${shapeStr(first.shape)} along axis ${a}`);
    }
    total += x.shape[a]!;
  }
  const sh = [...first.shape];
  sh[a] = total;
  const out = empty(sh, first.dtype);
  const st = out.strides;
  let pos = 0;
  for (const x of xs) {
    const len = x.shape[a]!;
    if (len > 0) copyStrided({ data: out.data, offset: pos * st[a]!, shape: x.shape, strides: st }, x);
    pos += len;
  }
  return record('concat', { axis: a }, xs, out);
}

/** Splits along `axis` into `count` equal parts (a number) or parts of the given sizes. Slices (views). */
export function split(x: Tensor, sizesOrCount: number | readonly number[], axis = 0): Tensor[] {
  const a = normAxis(axis, x.ndim, 'split');
  const n = x.shape[a]!;
  let sizes: number[];
  if (typeof sizesOrCount === 'number') {
    if (!Number.isInteger(sizesOrCount) || sizesOrCount <= 0 || n % sizesOrCount !== 0) {
      throw new Error(`split: dim ${a} of size ${n} does not split into ${sizesOrCount} equal parts`);
    }
    sizes = new Array<number>(sizesOrCount).fill(n / sizesOrCount);
  } else {
    sizes = [...sizesOrCount];
    if (sizes.some((s) => !Number.isInteger(s) || s < 0) || sizes.reduce((p, q) => p + q, 0) !== n) {
      throw new Error(`split: sizes [${sizes.join(', ')}] do not add up to dim ${a} of size ${n}`);
    }
  }
  const out: Tensor[] = [];
  let pos = 0;
  for (const s of sizes) {
    out.push(slice(x, a, pos, pos + s));
    pos += s;
  }
  return out;
}

/**
 * out[i][j][k] = x[i][index[i][j][k]][k] for axis 1 (torch.gather / take_along_axis):
 * index is int32 with x's rank, and index.shape[d] <= x.shape[d] off the axis.
 */
export function gather(x: Tensor, index: Tensor, axis: number): Tensor {
  if (index.dtype !== 'int32') throw new Error(`gather: index must be int32, got ${index.dtype}`);
  if (x.dtype !== 'float32' && x.dtype !== 'float64') throw new Error(`gather: x must be float32 or float64, got ${x.dtype}`);
  const a = normAxis(axis, x.ndim, 'gather');
  if (index.ndim !== x.ndim) throw new Error(`gather: index has ${index.ndim} dims, x has ${x.ndim}`);
  for (let d = 0; d < x.ndim; d++) {
    if (d !== a && index.shape[d]! > x.shape[d]!) {
      throw new Error(`gather: index shape ${shapeStr(index.shape)} exceeds x shape ${shapeStr(x.shape)} at dim ${d}`);
    }
  }
  const out = empty(index.shape, x.dtype);
  if (numel(index.shape) > 0 && x.shape[a] === 0) throw new Error(`gather: axis ${a} of x is empty`);
  try {
    gatherInto(out, x, index, a);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return record('gather', { axis: a }, [x, index], out);
}
