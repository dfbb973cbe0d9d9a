// Elementwise reduction kernels for collectives. bfloat16 (Uint16Array bits) is widened to
// float32, combined, and rounded back to nearest-even (same rounding as src/core/dtype.ts),
// block by block through scratch arrays so the hot loops stay monomorphic.
// float32/bfloat16 blocks of NATIVE_MIN elements or more run in native/comm.c (same results
// bit for bit; the TypeScript loops remain the fallback and the small-message path, where
// the ~1 µs koffi crossing costs more than the loop).
import type { CommBuffer, CommDType, ReduceOp } from './communicator.js';
import { NATIVE_OP_MAX, NATIVE_OP_SUM, nativeReduce } from './native-reduce.js';

const NATIVE_MIN = 2048;
let nat = nativeReduce();

/** Switches the native loops off/on (tests compare both paths); returns whether native is now in use. */
export function useNativeReduce(on: boolean): boolean {
  nat = on ? nativeReduce() : null;
  return nat !== null;
}

const BLOCK = 4096;
const fa = new Float32Array(BLOCK), ua = new Uint32Array(fa.buffer);
const fb = new Float32Array(BLOCK), ub = new Uint32Array(fb.buffer);

function roundBlockToBf16(src: Uint32Array, out: Uint16Array, o: number, n: number): void {
  for (let i = 0; i < n; i++) {
    const u = src[i]!;
    out[o + i] = (u & 0x7fffffff) > 0x7f800000 ? ((u >>> 16) | 0x40) & 0xffff : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
  }
}

/**
 * out[i] = a[i] op b[i], then divided by `divisor` when divisor !== 1 (the last step of 'avg').
 * out may alias a or b. 'avg' combines like 'sum' (the caller divides once at the end).
 */
export function combine(dtype: CommDType, op: ReduceOp, out: CommBuffer, a: CommBuffer, b: CommBuffer, divisor = 1): void {
  const n = out.length;
  const isMax = op === 'max';
  if (nat && n >= NATIVE_MIN && dtype !== 'int32') {
    const code = isMax ? NATIVE_OP_MAX : NATIVE_OP_SUM;
    if (dtype === 'float32') nat.combineF32(code, n, out as Float32Array, a as Float32Array, b as Float32Array, isMax ? 1 : divisor);
    else nat.combineBf16(code, n, out as Uint16Array, a as Uint16Array, b as Uint16Array, isMax ? 1 : divisor);
    return;
  }
  if (dtype === 'float32') {
    const o = out as Float32Array, x = a as Float32Array, y = b as Float32Array;
    if (isMax) for (let i = 0; i < n; i++) { const p = x[i]!, q = y[i]!; o[i] = p > q || p !== p ? p : q; }
    else if (divisor === 1) for (let i = 0; i < n; i++) o[i] = x[i]! + y[i]!;
    else for (let i = 0; i < n; i++) o[i] = (x[i]! + y[i]!) / divisor;
    return;
  }
  if (dtype === 'int32') {
    const o = out as Int32Array, x = a as Int32Array, y = b as Int32Array;
    if (isMax) for (let i = 0; i < n; i++) { const p = x[i]!, q = y[i]!; o[i] = p > q ? p : q; }
    else if (divisor === 1) for (let i = 0; i < n; i++) o[i] = (x[i]! + y[i]!) | 0;
    else throw new Error("dist: op 'avg' is not supported for int32");
    return;
  }
  const o = out as Uint16Array, x = a as Uint16Array, y = b as Uint16Array;
  for (let s = 0; s < n; s += BLOCK) {
    const m = Math.min(BLOCK, n - s);
    for (let i = 0; i < m; i++) { ua[i] = x[s + i]! << 16; ub[i] = y[s + i]! << 16; }
    if (isMax) for (let i = 0; i < m; i++) { const p = fa[i]!, q = fb[i]!; fa[i] = p > q || p !== p ? p : q; }
    else if (divisor === 1) for (let i = 0; i < m; i++) fa[i] = fa[i]! + fb[i]!;
    else for (let i = 0; i < m; i++) fa[i] = (fa[i]! + fb[i]!) / divisor;
    roundBlockToBf16(ua, o, s, m);
  }
}

/** In-place divide (avg after a sum), for float32/bfloat16. */
export function divideInPlace(dtype: CommDType, buf: CommBuffer, divisor: number): void {
  if (divisor === 1) return;
  if (dtype === 'int32') throw new Error("dist: op 'avg' is not supported for int32");
  if (nat && buf.length >= NATIVE_MIN) {
    if (dtype === 'float32') nat.divF32(buf.length, buf as Float32Array, divisor);
    else nat.divBf16(buf.length, buf as Uint16Array, divisor);
    return;
  }
  if (dtype === 'float32') { const b = buf as Float32Array; for (let i = 0; i < b.length; i++) b[i] = b[i]! / divisor; return; }
  const o = buf as Uint16Array;
  for (let s = 0; s < o.length; s += BLOCK) {
    const m = Math.min(BLOCK, o.length - s);
    for (let i = 0; i < m; i++) ua[i] = o[s + i]! << 16;
    for (let i = 0; i < m; i++) fa[i] = fa[i]! / divisor;
    roundBlockToBf16(ua, o, s, m);
  }
}

/** Widening accumulator used by the direct (small-message) algorithm: accumulate in float32 for bf16. */
export class Accumulator {
  private acc: Float32Array | Int32Array;
  private started = false;
  constructor(private readonly dtype: CommDType, private readonly op: ReduceOp, n: number) {
    if (op === 'avg' && dtype === 'int32') throw new Error("dist: op 'avg' is not supported for int32");
    this.acc = dtype === 'int32' ? new Int32Array(n) : new Float32Array(n);
  }
  add(x: CommBuffer): void {
    const acc = this.acc, n = acc.length, isMax = this.op === 'max';
    if (nat && n >= NATIVE_MIN && this.dtype !== 'int32') {
      const code = isMax ? NATIVE_OP_MAX : NATIVE_OP_SUM;
      if (this.dtype === 'bfloat16') nat.accBf16(code, this.started ? 0 : 1, n, acc as Float32Array, x as Uint16Array);
      else if (!this.started) acc.set(x as Float32Array);
      else nat.combineF32(code, n, acc as Float32Array, acc as Float32Array, x as Float32Array, 1);
    } else if (this.dtype === 'bfloat16') {
      const a = acc as Float32Array, h = x as Uint16Array;
      for (let s = 0; s < n; s += BLOCK) {
        const m = Math.min(BLOCK, n - s);
        for (let i = 0; i < m; i++) ub[i] = h[s + i]! << 16;
        if (!this.started) for (let i = 0; i < m; i++) a[s + i] = fb[i]!;
        else if (isMax) for (let i = 0; i < m; i++) { const p = a[s + i]!, q = fb[i]!; a[s + i] = p > q || p !== p ? p : q; }
        else for (let i = 0; i < m; i++) a[s + i] = a[s + i]! + fb[i]!;
      }
    } else if (!this.started) {
      acc.set(x as Float32Array & Int32Array);
    } else if (this.dtype === 'float32') {
      const a = acc as Float32Array, y = x as Float32Array;
      if (isMax) for (let i = 0; i < n; i++) { const p = a[i]!, q = y[i]!; a[i] = p > q || p !== p ? p : q; }
      else for (let i = 0; i < n; i++) a[i] = a[i]! + y[i]!;
    } else {
      const a = acc as Int32Array, y = x as Int32Array;
      if (isMax) for (let i = 0; i < n; i++) { const p = a[i]!, q = y[i]!; a[i] = p > q ? p : q; }
      else for (let i = 0; i < n; i++) a[i] = (a[i]! + y[i]!) | 0;
    }
    this.started = true;
  }
  /** Writes the result (divided by `divisor` for avg) into out. */
  finish(out: CommBuffer, divisor: number): void {
    const acc = this.acc, n = acc.length;
    if (this.dtype === 'int32') { (out as Int32Array).set(acc as Int32Array); return; }
    const a = acc as Float32Array;
    if (nat && n >= NATIVE_MIN) {
      if (this.op === 'avg' && divisor !== 1) nat.divF32(n, a, divisor);
      if (this.dtype === 'float32') (out as Float32Array).set(a);
      else nat.roundBf16(n, a, out as Uint16Array);
      return;
    }
    if (this.op === 'avg' && divisor !== 1) for (let i = 0; i < n; i++) a[i] = a[i]! / divisor;
    if (this.dtype === 'float32') { (out as Float32Array).set(a); return; }
    const u = new Uint32Array(a.buffer, a.byteOffset, n);
    roundBlockToBf16(u, out as Uint16Array, 0, n);
  }
}

export function elementBytes(d: CommDType): number { return d === 'bfloat16' ? 2 : 4; }

export function allocLike(d: CommDType, n: number): CommBuffer {
  return d === 'float32' ? new Float32Array(n) : d === 'int32' ? new Int32Array(n) : new Uint16Array(n);
}

/** A typed view of the same dtype over raw bytes (bytes must be aligned to the element size). */
export function viewAs(d: CommDType, bytes: Uint8Array, n: number): CommBuffer {
  if (d === 'float32') return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  if (d === 'int32') return new Int32Array(bytes.buffer, bytes.byteOffset, n);
  return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
}
