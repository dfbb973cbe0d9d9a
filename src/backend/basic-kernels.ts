// Dispatch for the element-wise, reduction and layout kernels: coalesces layouts, then
// runs native/basic.c for float32 (via nativeFor: size threshold, ATHANOR_BACKEND) or
// the TypeScript reference kernel. Works on any strided view ({data, offset, shape,
// strides}), so ops can hand in tensors or ad-hoc views without creating Tensor objects.
import type { Storage } from '../core/dtype.js';
import { broadcastStrides, coalesce, contiguousStrides, isContiguous, sameShape, shapeStr } from '../core/layout.js';
import { nativeFor } from './dispatch.js';
import { nativeBasic, type NativeBasic } from './native-basic.js';
import * as ref from './reference/basic.js';
import type { BinCode, FArr, UnCode } from './reference/basic.js';

export { BIN, UN } from './reference/basic.js';
export type { BinCode, UnCode } from './reference/basic.js';

export interface View {
  readonly data: Storage;
  readonly offset: number;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
}

const MAX_DIMS = 16;

// Bind the native kernels up front so the buffer pool's huge-page advice is in place
// before the first large activations are allocated.
nativeBasic();

function count(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i]!;
  return n;
}

/** The native kernels when `n` float32 elements should run natively, else null. */
function nat(data: Storage, n: number): NativeBasic | null {
  if (!(data instanceof Float32Array)) return null;
  return nativeFor('float32', n) ? nativeBasic() : null;
}

function fillMeta(meta: Int32Array, shape: readonly number[], strides: readonly (readonly number[])[]): number {
  const nd = shape.length;
  if (nd > MAX_DIMS) throw new Error(`basic-kernels: ${nd} dims after coalescing exceeds the native limit of ${MAX_DIMS}`);
  for (let d = 0; d < nd; d++) meta[d] = shape[d]!;
  for (let k = 0; k < strides.length; k++) {
    const s = strides[k]!;
    for (let d = 0; d < nd; d++) meta[nd * (k + 1) + d] = s[d]!;
  }
  return nd;
}

const UNIT_SHAPE: number[] = [0];
const UNIT: number[] = [1];
const UNIT3: number[][] = [UNIT, UNIT, UNIT];
const UNIT_SCALAR: number[][] = [UNIT, UNIT, [0]];

function flatContiguous(v: View): boolean {
  return isContiguous(v.shape, v.strides);
}

/**
 * out = a op b with a and b broadcast to out.shape. out may be any view (also a view
 * of a, for in-place accumulation). All three must be float arrays of the same type.
 */
export function binaryInto(op: BinCode, out: View, a: View, b: View): void {
  const n = count(out.shape);
  if (n === 0) return;
  let shape: readonly number[];
  let strides: readonly (readonly number[])[];
  if (sameShape(a.shape, out.shape) && sameShape(b.shape, out.shape) && flatContiguous(out) && flatContiguous(a) && flatContiguous(b)) {
    UNIT_SHAPE[0] = n;
    shape = UNIT_SHAPE;
    strides = UNIT3;
  } else if (count(b.shape) === 1 && sameShape(a.shape, out.shape) && flatContiguous(out) && flatContiguous(a)) {
    // tensor op scalar: the common `x * 0.5` case, without broadcast bookkeeping
    UNIT_SHAPE[0] = n;
    shape = UNIT_SHAPE;
    strides = UNIT_SCALAR;
  } else {
    const c = coalesce(out.shape, [out.strides, broadcastStrides(a.shape, a.strides, out.shape), broadcastStrides(b.shape, b.strides, out.shape)]);
    shape = c.shape;
    strides = c.strides;
  }
  const lib = nat(out.data, n);
  if (lib && a.data instanceof Float32Array && b.data instanceof Float32Array) {
    const nd = fillMeta(lib.meta, shape, strides);
    lib.binary(op, nd, lib.meta, out.data as Float32Array, out.offset, a.data, a.offset, b.data, b.offset);
    return;
  }
  if (shape === UNIT_SHAPE) ref.binaryRow(op, n, out.data as FArr, out.offset, 1, a.data as FArr, a.offset, 1, b.data as FArr, b.offset, strides === UNIT3 ? 1 : 0);
  else ref.binaryRef(op, shape, strides, out.data as FArr, out.offset, a.data as FArr, a.offset, b.data as FArr, b.offset);
}

/** y = f(x) for contiguous x and y of n elements (they may be the same array). */
export function unaryContig(op: UnCode, n: number, x: FArr, xOff: number, y: FArr, yOff: number, p: number): void {
  if (n === 0) return;
  const lib = nat(x, n);
  if (lib && y instanceof Float32Array) lib.unary(op, n, x as Float32Array, xOff, y, yOff, p);
  else ref.unaryRef(op, n, x, xOff, y, yOff, p);
}

/** dx (+)= f'(x)·dy over n contiguous elements; pass x for y (or y for x) when the rule does not need one. */
export function unaryBackwardContig(op: UnCode, n: number, x: FArr, xOff: number, y: FArr, yOff: number, dy: FArr, dyOff: number,
  dx: FArr, dxOff: number, p: number, accumulate: boolean): void {
  if (n === 0) return;
  const lib = nat(dx, n);
  if (lib && x instanceof Float32Array && y instanceof Float32Array && dy instanceof Float32Array) {
    lib.unaryBwd(op, n, x, xOff, y, yOff, dy, dyOff, dx as Float32Array, dxOff, p, accumulate ? 1 : 0);
  } else {
    ref.unaryBwdRef(op, n, x, xOff, y, yOff, dy, dyOff, dx, dxOff, p, accumulate);
  }
}

function elementSize(d: Storage): number {
  return d.BYTES_PER_ELEMENT;
}

/** dst = src (src broadcast to dst.shape); both the same storage type. */
export function copyStrided(dst: View, src: View): void {
  const n = count(dst.shape);
  if (n === 0) return;
  if (dst.data.constructor !== src.data.constructor) {
    throw new Error(`copy: storage types differ (${dst.data.constructor.name} vs ${src.data.constructor.name}); cast first`);
  }
  const c = coalesce(dst.shape, [dst.strides, broadcastStrides(src.shape, src.strides, dst.shape)]);
  if (c.shape.length === 1 && c.strides[0]![0] === 1 && c.strides[1]![0] === 1 && n < 1 << 16) {
    // Small contiguous copies: TypedArray.set is a memcpy without the FFI crossing.
    (dst.data as Float32Array).set((src.data as Float32Array).subarray(src.offset, src.offset + n), dst.offset);
    return;
  }
  // Copies are dtype-agnostic; float64 stays on the reference path like every float64 kernel.
  const lib = dst.data instanceof Float64Array ? null : nativeFor('float32', n) ? nativeBasic() : null;
  if (lib) {
    const nd = fillMeta(lib.meta, c.shape, c.strides);
    lib.copyStrided(elementSize(dst.data), nd, lib.meta, dst.data, dst.offset, src.data, src.offset);
    return;
  }
  ref.copyStridedRef(c.shape, c.strides, dst.data, dst.offset, src.data, src.offset);
}

/**
 * out (contiguous, outN elements, laid out as `outShape` with size-1 reduced dims or
 * without them) = scale · sum of x over `axes`. `reduced[d]` marks the dims of x to sum.
 */
export function sumInto(out: FArr, oOff: number, x: View, reduced: readonly boolean[], scale: number): void {
  const keptShape = x.shape.map((d, i) => (reduced[i] ? 1 : d));
  const outN = count(keptShape);
  const os = contiguousStrides(keptShape).map((s, i) => (reduced[i] ? 0 : s));
  const n = count(x.shape);
  if (n === 0) {
    for (let k = 0; k < outN; k++) out[oOff + k] = 0 * scale; // mean of nothing is NaN, as in PyTorch
    return;
  }
  const c = coalesce(x.shape, [x.strides, os]);
  const lib = nat(x.data, n);
  if (lib && out instanceof Float32Array) {
    const nd = fillMeta(lib.meta, c.shape, c.strides);
    lib.sum(nd, lib.meta, x.data as Float32Array, x.offset, out, oOff, outN, scale);
    return;
  }
  ref.sumRef(c.shape, c.strides, x.data as FArr, x.offset, out, oOff, outN, scale);
}

/** Max and first argmax along `axis` of a contiguous x (vals/idx have x's shape without the axis). */
export function maxAlong(x: View, axis: number, vals: FArr, idx: Int32Array): void {
  if (!isContiguous(x.shape, x.strides)) throw new Error('maxAlong: input must be contiguous');
  const len = x.shape[axis]!;
  let outer = 1, inner = 1;
  for (let d = 0; d < axis; d++) outer *= x.shape[d]!;
  for (let d = axis + 1; d < x.shape.length; d++) inner *= x.shape[d]!;
  if (outer * inner === 0) return;
  if (len === 0) throw new Error(`max: cannot reduce over an empty axis ${axis} of shape ${shapeStr(x.shape)}`);
  const lib = nat(x.data, outer * len * inner);
  if (lib && vals instanceof Float32Array) lib.max(outer, len, inner, x.data as Float32Array, x.offset, vals, 0, idx, 0);
  else ref.maxRef(outer, len, inner, x.data as FArr, x.offset, vals, 0, idx, 0);
}

function axisLayout(x: View, axis: number): { xs: number[]; axStride: number; axLen: number } {
  const xs = x.strides.slice();
  const axStride = xs[axis]!;
  xs[axis] = 0;
  return { xs, axStride, axLen: x.shape[axis]! };
}

/** out (index.shape, any view) = x gathered along axis by the int32 index (torch.gather). */
export function gatherInto(out: View, x: View, index: View, axis: number): void {
  const n = count(index.shape);
  if (n === 0) return;
  const { xs, axStride, axLen } = axisLayout(x, axis);
  const c = coalesce(index.shape, [out.strides, xs, index.strides]);
  const lib = nat(x.data, n);
  let bad: number;
  if (lib && out.data instanceof Float32Array) {
    const nd = fillMeta(lib.meta, c.shape, c.strides);
    bad = lib.gather(nd, lib.meta, out.data, out.offset, x.data as Float32Array, x.offset, index.data as Int32Array, index.offset, axStride, axLen);
  } else {
    bad = ref.gatherRef(c.shape, c.strides, out.data as FArr, out.offset, x.data as FArr, x.offset, index.data as Int32Array, index.offset, axStride, axLen);
  }
  if (bad) throw new Error(`gather: ${bad} index value(s) out of range [0, ${axLen}) along axis ${axis}`);
}

/** dx[.., index, ..] += g along axis (the gather backward); dx is a view with x's shape. */
export function scatterAddInto(dx: View, g: View, index: View, axis: number): void {
  const n = count(index.shape);
  if (n === 0) return;
  const { xs, axStride, axLen } = axisLayout(dx, axis);
  const c = coalesce(index.shape, [xs, g.strides, index.strides]);
  const lib = nat(dx.data, n);
  let bad: number;
  if (lib && g.data instanceof Float32Array) {
    const nd = fillMeta(lib.meta, c.shape, c.strides);
    bad = lib.scatterAdd(nd, lib.meta, dx.data as Float32Array, dx.offset, g.data, g.offset, index.data as Int32Array, index.offset, axStride, axLen);
  } else {
    bad = ref.scatterAddRef(c.shape, c.strides, dx.data as FArr, dx.offset, g.data as FArr, g.offset, index.data as Int32Array, index.offset, axStride, axLen);
  }
  if (bad) throw new Error(`scatterAdd: ${bad} index value(s) out of range [0, ${axLen}) along axis ${axis}`);
}

/** out = cond != 0 ? a : b, all broadcast to out.shape; cond is int32 or a float mask. */
export function whereInto(out: View, cond: View, a: View, b: View): void {
  const n = count(out.shape);
  if (n === 0) return;
  const sh = out.shape;
  const c = coalesce(sh, [out.strides, broadcastStrides(cond.shape, cond.strides, sh), broadcastStrides(a.shape, a.strides, sh), broadcastStrides(b.shape, b.strides, sh)]);
  const lib = nat(out.data, n);
  if (lib && a.data instanceof Float32Array && b.data instanceof Float32Array && (cond.data instanceof Int32Array || cond.data instanceof Float32Array)) {
    const nd = fillMeta(lib.meta, c.shape, c.strides);
    if (cond.data instanceof Int32Array) lib.whereI32(nd, lib.meta, out.data as Float32Array, out.offset, cond.data, cond.offset, a.data, a.offset, b.data, b.offset);
    else lib.whereF32(nd, lib.meta, out.data as Float32Array, out.offset, cond.data, cond.offset, a.data, a.offset, b.data, b.offset);
    return;
  }
  ref.whereRef(c.shape, c.strides, out.data as FArr, out.offset, cond.data as Int32Array | FArr, cond.offset, a.data as FArr, a.offset, b.data as FArr, b.offset);
}

export type CastDType = 'float32' | 'float64' | 'bfloat16' | 'float16';

/** Converts n contiguous elements from one float format to another. */
export function castContig(n: number, from: CastDType, x: Storage, xOff: number, to: CastDType, y: Storage, yOff: number): void {
  if (n === 0) return;
  if (from === to) {
    (y as Float32Array).set((x as Float32Array).subarray(xOff, xOff + n), yOff);
    return;
  }
  const lib = nativeFor('float32', n) ? nativeBasic() : null;
  if (from === 'float32') {
    const xf = x as Float32Array;
    if (to === 'bfloat16') return lib ? lib.f32ToBf16(n, xf, xOff, y as Uint16Array, yOff) : ref.toBf16Ref(n, xf, xOff, y as Uint16Array, yOff);
    if (to === 'float16') return lib ? lib.f32ToF16(n, xf, xOff, y as Uint16Array, yOff) : ref.toF16Ref(n, xf, xOff, y as Uint16Array, yOff);
    return lib ? lib.f32ToF64(n, xf, xOff, y as Float64Array, yOff) : ref.floatCastRef(n, xf, xOff, y as Float64Array, yOff);
  }
  if (to === 'float32') {
    const yf = y as Float32Array;
    if (from === 'bfloat16') return lib ? lib.bf16ToF32(n, x as Uint16Array, xOff, yf, yOff) : ref.fromBf16Ref(n, x as Uint16Array, xOff, yf, yOff);
    if (from === 'float16') return lib ? lib.f16ToF32(n, x as Uint16Array, xOff, yf, yOff) : ref.fromF16Ref(n, x as Uint16Array, xOff, yf, yOff);
    return lib ? lib.f64ToF32(n, x as Float64Array, xOff, yf, yOff) : ref.floatCastRef(n, x as Float64Array, xOff, yf, yOff);
  }
  // Everything else goes through float32 (16-bit formats are defined by their float32 conversion).
  const tmp = new Float32Array(n);
  castContig(n, from, x, xOff, 'float32', tmp, 0);
  castContig(n, 'float32', tmp, 0, to, y, yOff);
}
