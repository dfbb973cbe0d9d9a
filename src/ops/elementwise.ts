// Element-wise binary ops with NumPy broadcasting, where(), and the non-differentiable
// utilities that write into existing tensors (copyInto, fill) or create random ones.
// The hot path (a + b on small tensors) avoids closures and temporary arrays: one
// shape check, one output allocation, one kernel call, one tape record.
import type { DType } from '../core/dtype.js';
import { f32ToBf16, f32ToF16 } from '../core/dtype.js';
import { Tensor, empty, forEachIndex, scalar } from '../core/tensor.js';
import { broadcastShapes, sameShape, shapeStr, type Shape } from '../core/layout.js';
import { Rng, globalRng } from '../core/rng.js';
import { record } from '../autograd/tape.js';
import { BIN, binaryInto, copyStrided, whereInto, type BinCode } from '../backend/basic-kernels.js';

/** Shared attrs for ops without attributes (never mutated). */
export const NO_ATTRS = Object.freeze({}) as Record<string, never>;

export function assertFloat(t: Tensor, op: string): void {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') {
    throw new Error(`${op}: expected a float32 or float64 tensor, got ${t.dtype} (cast it first)`);
  }
}

function binary(op: BinCode, name: 'add' | 'sub' | 'mul' | 'div', a: Tensor, b: Tensor | number): Tensor {
  const bt = typeof b === 'number' ? scalar(b, a.dtype) : b;
  if (a.dtype !== bt.dtype) throw new Error(`${name}: dtype mismatch ${a.dtype} vs ${bt.dtype}`);
  assertFloat(a, name);
  const shape = bt.shape.length === 0 || sameShape(a.shape, bt.shape) ? a.shape : broadcastShapes(a.shape, bt.shape, name);
  const out = empty(shape, a.dtype);
  binaryInto(op, out, a, bt);
  return record(name, NO_ATTRS, [a, bt], out);
}

/** a + b (NumPy broadcasting; b may be a number). */
export function add(a: Tensor, b: Tensor | number): Tensor {
  return binary(BIN.add, 'add', a, b);
}

/** a - b (NumPy broadcasting; b may be a number). */
export function sub(a: Tensor, b: Tensor | number): Tensor {
  return binary(BIN.sub, 'sub', a, b);
}

/** a * b (NumPy broadcasting; b may be a number). */
export function mul(a: Tensor, b: Tensor | number): Tensor {
  return binary(BIN.mul, 'mul', a, b);
}

/** a / b (NumPy broadcasting; b may be a number). */
export function div(a: Tensor, b: Tensor | number): Tensor {
  return binary(BIN.div, 'div', a, b);
}

/**
 * cond ? a : b element-wise, broadcasting all three. cond is an int32 tensor or a float
 * mask (non-zero = true); a or b may be numbers. Differentiable in a and b.
 */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  if (cond.dtype !== 'int32' && cond.dtype !== 'float32' && cond.dtype !== 'float64') {
    throw new Error(`where: cond must be int32 or a float mask, got ${cond.dtype}`);
  }
  const dtype: DType = typeof a !== 'number' ? a.dtype : typeof b !== 'number' ? b.dtype : cond.dtype === 'float64' ? 'float64' : 'float32';
  const at = typeof a === 'number' ? scalar(a, dtype) : a;
  const bt = typeof b === 'number' ? scalar(b, dtype) : b;
  if (at.dtype !== bt.dtype) throw new Error(`where: dtype mismatch ${at.dtype} vs ${bt.dtype}`);
  assertFloat(at, 'where');
  const shape = broadcastShapes(broadcastShapes(cond.shape, at.shape, 'where'), bt.shape, 'where');
  const out = empty(shape, dtype);
  // A float64 mask with float32 values (or vice versa) is read through a cast copy.
  let c = cond;
  if (cond.dtype !== 'int32' && cond.dtype !== dtype) {
    c = empty(cond.shape, dtype);
    const src = cond.data, dst = c.data;
    forEachIndex(cond.shape, cond.strides, cond.offset, (s, i) => { dst[i] = src[s]!; });
  }
  whereInto(out, c, at, bt);
  if (c !== cond) c.dispose();
  return record('where', NO_ATTRS, [cond, at, bt], out);
}

/** dst[...] = src (broadcast to dst's shape), in place; dst may be a view. Not differentiable. */
export function copyInto(dst: Tensor, src: Tensor): Tensor {
  if (dst.dtype !== src.dtype) throw new Error(`copyInto: dtype mismatch: dst is ${dst.dtype}, src is ${src.dtype} (cast src first)`);
  const b = broadcastShapes(dst.shape, src.shape, 'copyInto');
  if (!sameShape(b, dst.shape)) throw new Error(`copyInto: src shape ${shapeStr(src.shape)} does not broadcast to dst shape ${shapeStr(dst.shape)}`);
  copyStrided(dst, src);
  return dst;
}

/** Sets every element of t (any view) to value, in place (bf16/f16 store the encoded value). Not differentiable. */
export function fill(t: Tensor, value: number): Tensor {
  const v = t.dtype === 'bfloat16' ? f32ToBf16(value) : t.dtype === 'float16' ? f32ToF16(value) : value;
  const d = t.data;
  if (t.isContiguous()) {
    d.fill(v, t.offset, t.offset + t.size);
  } else {
    forEachIndex(t.shape, t.strides, t.offset, (s) => { d[s] = v; });
  }
  return t;
}

function randomFloat(shape: Shape, dtype: DType, op: string): Tensor {
  if (dtype !== 'float32' && dtype !== 'float64') throw new Error(`${op}: dtype must be float32 or float64, got ${dtype}`);
  return empty(shape, dtype);
}

/** Normal samples N(mean, std^2) from rng (deterministic for a given seed). */
export function randn(shape: Shape, rng: Rng = globalRng, dtype: DType = 'float32', std = 1, mean = 0): Tensor {
  const t = randomFloat(shape, dtype, 'randn');
  rng.fillNormal(t.data as Float32Array | Float64Array, mean, std);
  return t;
}

/** Uniform samples in [0, 1). */
export function rand(shape: Shape, rng: Rng = globalRng, dtype: DType = 'float32'): Tensor {
  return uniform(shape, 0, 1, rng, dtype);
}

/** Uniform samples in [lo, hi). */
export function uniform(shape: Shape, lo: number, hi: number, rng: Rng = globalRng, dtype: DType = 'float32'): Tensor {
  const t = randomFloat(shape, dtype, 'uniform');
  const d = t.data as Float32Array | Float64Array;
  rng.fillUniform(d, lo, hi);
  if (d instanceof Float32Array && hi > lo) {
    // Rounding to float32 can land exactly on hi; keep the interval half-open.
    const below = nextBelowF32(hi);
    for (let i = 0; i < d.length; i++) if (d[i]! >= hi) d[i] = below;
  }
  return t;
}

/** The largest float32 strictly below x. */
function nextBelowF32(x: number): number {
  const f = Math.fround(x);
  if (f < x) return f;
  if (f === 0) return -1.401298464324817e-45;
  const a = new Float32Array([f]);
  const u = new Int32Array(a.buffer);
  u[0]! += f > 0 ? -1 : 1; // one ulp toward -Infinity
  return a[0]!;
}
