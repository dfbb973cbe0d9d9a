// TypeScript reference kernels for the element-wise, reduction and layout families:
// the fallback when the native library is missing (or forced off), the path for
// float64 and for tiny tensors, and the oracle for the native conformance tests.
// Same calling convention as native/basic.c: layouts arrive already coalesced as a
// shape plus one strides array per operand, offsets are element offsets.
import type { Storage } from '../../core/dtype.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../core/dtype.js';

export type FArr = Float32Array | Float64Array;

/** Binary op codes (shared with native/basic.c). */
export const BIN = { add: 0, sub: 1, mul: 2, div: 3 } as const;
/** Unary op codes (shared with native/basic.c). */
export const UN = { neg: 0, exp: 1, log: 2, sqrt: 3, rsqrt: 4, pow: 5, tanh: 6, sigmoid: 7, relu: 8, gelu: 9, silu: 10, scale: 11 } as const;
export type BinCode = (typeof BIN)[keyof typeof BIN];
export type UnCode = (typeof UN)[keyof typeof UN];

const GELU_K = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715;

/**
 * Calls row(offsets, len) for every innermost row of `shape`, with the start offset of
 * each operand (base offsets included). offs is reused between calls.
 */
export function forRows(shape: readonly number[], strides: readonly (readonly number[])[], base: readonly number[],
  row: (offs: number[], len: number) => void): void {
  const nd = shape.length;
  const k = strides.length;
  let n = 1;
  for (let d = 0; d < nd; d++) n *= shape[d]!;
  if (n === 0) return;
  const offs = base.slice();
  if (nd <= 1) {
    row(offs, nd === 0 ? 1 : shape[0]!);
    return;
  }
  const len = shape[nd - 1]!;
  const rows = n / len;
  const idx = new Array<number>(nd - 1).fill(0);
  for (let r = 0; r < rows; r++) {
    row(offs, len);
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]!++;
      for (let j = 0; j < k; j++) offs[j]! += strides[j]![d]!;
      if (idx[d]! < shape[d]!) break;
      for (let j = 0; j < k; j++) offs[j]! -= strides[j]![d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

function innerStride(s: readonly number[]): number {
  return s.length ? s[s.length - 1]! : 1;
}

export function binaryRow(op: BinCode, len: number, o: FArr, oi: number, so: number, a: FArr, ai: number, sa: number, b: FArr, bi: number, sb: number): void {
  switch (op) {
    case 0: for (let i = 0; i < len; i++) o[oi + i * so] = a[ai + i * sa]! + b[bi + i * sb]!; break;
    case 1: for (let i = 0; i < len; i++) o[oi + i * so] = a[ai + i * sa]! - b[bi + i * sb]!; break;
    case 2: for (let i = 0; i < len; i++) o[oi + i * so] = a[ai + i * sa]! * b[bi + i * sb]!; break;
    case 3: for (let i = 0; i < len; i++) o[oi + i * so] = a[ai + i * sa]! / b[bi + i * sb]!; break;
  }
}

/** out = a op b; strides [out, a, b] (zero strides broadcast). out may alias a. */
export function binaryRef(op: BinCode, shape: readonly number[], strides: readonly (readonly number[])[],
  out: FArr, oOff: number, a: FArr, aOff: number, b: FArr, bOff: number): void {
  const so = innerStride(strides[0]!), sa = innerStride(strides[1]!), sb = innerStride(strides[2]!);
  forRows(shape, strides, [oOff, aOff, bOff], (o, len) => binaryRow(op, len, out, o[0]!, so, a, o[1]!, sa, b, o[2]!, sb));
}

export function unaryValue(op: UnCode, v: number, p: number): number {
  switch (op) {
    case 0: return -v;
    case 1: return Math.exp(v);
    case 2: return Math.log(v);
    case 3: return Math.sqrt(v);
    case 4: return 1 / Math.sqrt(v);
    case 5: return p === 2 ? v * v : Math.pow(v, p);
    case 6: return Math.tanh(v);
    case 7: return 1 / (1 + Math.exp(-v));
    case 8: return v < 0 ? 0 : v;
    case 9: return 0.5 * v * (1 + Math.tanh(GELU_K * (v + GELU_C * v * v * v)));
    case 10: return v / (1 + Math.exp(-v));
    case 11: return v * p;
  }
}

/** y[i] = f(x[i]) over n contiguous elements (x and y may be the same array). */
export function unaryRef(op: UnCode, n: number, x: FArr, xOff: number, y: FArr, yOff: number, p: number): void {
  switch (op) {
    case 0: for (let i = 0; i < n; i++) y[yOff + i] = -x[xOff + i]!; return;
    case 8: for (let i = 0; i < n; i++) { const v = x[xOff + i]!; y[yOff + i] = v < 0 ? 0 : v; } return;
    case 11: for (let i = 0; i < n; i++) y[yOff + i] = x[xOff + i]! * p; return;
    default: for (let i = 0; i < n; i++) y[yOff + i] = unaryValue(op, x[xOff + i]!, p);
  }
}

/** f'(x)·g, from x and/or y = f(x). */
export function unaryDeriv(op: UnCode, xv: number, yv: number, g: number, p: number): number {
  switch (op) {
    case 0: return -g;
    case 1: return g * yv;
    case 2: return g / xv;
    case 3: return 0.5 * g / yv;
    case 4: return -0.5 * g * yv * yv * yv;
    case 5: return p === 2 ? 2 * g * xv : g * p * Math.pow(xv, p - 1);
    case 6: return g * (1 - yv * yv);
    case 7: return g * yv * (1 - yv);
    case 8: return xv > 0 ? g : 0;
    case 9: {
      const x2 = xv * xv;
      const t = Math.tanh(GELU_K * (xv + GELU_C * x2 * xv));
      return g * (0.5 * (1 + t) + 0.5 * xv * (1 - t * t) * GELU_K * (1 + 3 * GELU_C * x2));
    }
    case 10: {
      const s = 1 / (1 + Math.exp(-xv));
      return g * s * (1 + xv * (1 - s));
    }
    case 11: return g * p;
  }
}

/** dx (+)= f'(x)·dy over n contiguous elements. */
export function unaryBwdRef(op: UnCode, n: number, x: FArr, xOff: number, y: FArr, yOff: number, dy: FArr, dyOff: number,
  dx: FArr, dxOff: number, p: number, acc: boolean): void {
  for (let i = 0; i < n; i++) {
    const d = unaryDeriv(op, x[xOff + i]!, y[yOff + i]!, dy[dyOff + i]!, p);
    dx[dxOff + i] = acc ? dx[dxOff + i]! + d : d;
  }
}

/** dst = src element by element (any storage type); strides [dst, src]. */
export function copyStridedRef(shape: readonly number[], strides: readonly (readonly number[])[], dst: Storage, dOff: number, src: Storage, sOff: number): void {
  const sd = innerStride(strides[0]!), ss = innerStride(strides[1]!);
  forRows(shape, strides, [dOff, sOff], (o, len) => {
    const d0 = o[0]!, s0 = o[1]!;
    if (sd === 1 && ss === 1) {
      for (let i = 0; i < len; i++) dst[d0 + i] = src[s0 + i]!;
    } else {
      for (let i = 0; i < len; i++) dst[d0 + i * sd] = src[s0 + i * ss]!;
    }
  });
}

/** out[k] = scale · Σ x over the dims where the out stride is 0; strides [x, out]; out has outN contiguous elements. */
export function sumRef(shape: readonly number[], strides: readonly (readonly number[])[], x: FArr, xOff: number,
  out: FArr, oOff: number, outN: number, scale: number): void {
  const acc = new Float64Array(outN);
  const sx = innerStride(strides[0]!), so = innerStride(strides[1]!);
  forRows(shape, strides, [xOff, 0], (o, len) => {
    const x0 = o[0]!, a0 = o[1]!;
    if (so === 0) {
      let s = 0;
      for (let i = 0; i < len; i++) s += x[x0 + i * sx]!;
      acc[a0]! += s;
    } else {
      for (let i = 0; i < len; i++) acc[a0 + i * so]! += x[x0 + i * sx]!;
    }
  });
  for (let k = 0; k < outN; k++) out[oOff + k] = acc[k]! * scale;
}

/** Max and first argmax over the middle dim of a contiguous [outer, len, inner] block (NaN wins). */
export function maxRef(outer: number, len: number, inner: number, x: FArr, xOff: number, vals: FArr, vOff: number, idx: Int32Array, iOff: number): void {
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < inner; j++) {
      const base = xOff + o * len * inner + j;
      let best = x[base]!, bi = 0;
      for (let l = 1; l < len; l++) {
        const v = x[base + l * inner]!;
        if (v > best || (v !== v && best === best)) { best = v; bi = l; }
      }
      vals[vOff + o * inner + j] = best;
      idx[iOff + o * inner + j] = bi;
    }
  }
}

/**
 * out = x gathered along an axis: strides [out, x with the axis stride 0, index]; the
 * index value times axStride is added to x's offset. Returns the count of out-of-range
 * indices (those read position 0).
 */
export function gatherRef(shape: readonly number[], strides: readonly (readonly number[])[], out: FArr, oOff: number, x: FArr, xOff: number,
  index: Int32Array, iOff: number, axStride: number, axLen: number): number {
  let bad = 0;
  const so = innerStride(strides[0]!), sx = innerStride(strides[1]!), si = innerStride(strides[2]!);
  forRows(shape, strides, [oOff, xOff, iOff], (o, len) => {
    for (let i = 0; i < len; i++) {
      let k = index[o[2]! + i * si]!;
      if (k < 0 || k >= axLen) { bad++; k = 0; }
      out[o[0]! + i * so] = x[o[1]! + i * sx + k * axStride]!;
    }
  });
  return bad;
}

/** dx[.., index, ..] += g: strides [dx with the axis stride 0, g, index]. Returns the out-of-range count (skipped). */
export function scatterAddRef(shape: readonly number[], strides: readonly (readonly number[])[], dx: FArr, dOff: number, g: FArr, gOff: number,
  index: Int32Array, iOff: number, axStride: number, axLen: number): number {
  let bad = 0;
  const sd = innerStride(strides[0]!), sg = innerStride(strides[1]!), si = innerStride(strides[2]!);
  forRows(shape, strides, [dOff, gOff, iOff], (o, len) => {
    for (let i = 0; i < len; i++) {
      const k = index[o[2]! + i * si]!;
      if (k < 0 || k >= axLen) { bad++; continue; }
      dx[o[0]! + i * sd + k * axStride]! += g[o[1]! + i * sg]!;
    }
  });
  return bad;
}

/** out = cond != 0 ? a : b; strides [out, cond, a, b]. */
export function whereRef(shape: readonly number[], strides: readonly (readonly number[])[], out: FArr, oOff: number, cond: Int32Array | FArr, cOff: number,
  a: FArr, aOff: number, b: FArr, bOff: number): void {
  const so = innerStride(strides[0]!), sc = innerStride(strides[1]!), sa = innerStride(strides[2]!), sb = innerStride(strides[3]!);
  forRows(shape, strides, [oOff, cOff, aOff, bOff], (o, len) => {
    for (let i = 0; i < len; i++) out[o[0]! + i * so] = cond[o[1]! + i * sc] !== 0 ? a[o[2]! + i * sa]! : b[o[3]! + i * sb]!;
  });
}

// Casts over n contiguous elements. 16-bit formats go through float32 (dtype.ts).
export function toBf16Ref(n: number, x: FArr, xOff: number, y: Uint16Array, yOff: number): void {
  for (let i = 0; i < n; i++) y[yOff + i] = f32ToBf16(x[xOff + i]!);
}
export function fromBf16Ref(n: number, x: Uint16Array, xOff: number, y: FArr, yOff: number): void {
  for (let i = 0; i < n; i++) y[yOff + i] = bf16ToF32(x[xOff + i]!);
}
export function toF16Ref(n: number, x: FArr, xOff: number, y: Uint16Array, yOff: number): void {
  for (let i = 0; i < n; i++) y[yOff + i] = f32ToF16(x[xOff + i]!);
}
export function fromF16Ref(n: number, x: Uint16Array, xOff: number, y: FArr, yOff: number): void {
  for (let i = 0; i < n; i++) y[yOff + i] = f16ToF32(x[xOff + i]!);
}
export function floatCastRef(n: number, x: FArr, xOff: number, y: FArr, yOff: number): void {
  for (let i = 0; i < n; i++) y[yOff + i] = x[xOff + i]!;
}
