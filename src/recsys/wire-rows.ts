// Rows to and from the wire's half-precision dtypes in TypeScript: the reference of the
// native bfloat16 gather and cast kernels (native/sparse.c, native/cast.c), used without
// them, and for the init vectors of ids a native gather left out (they have no slot).
import { decodeHalf } from './native-sparse.js';

/**
 * Encodes dim float32 values, read as their bits at srcU[o..], as bfloat16 into out[d..]:
 * round to nearest even, quiet NaN (as f32ToBf16 in core/dtype.ts), so the TypeScript
 * loops and the native gather write the same bits.
 */
export function bf16RowFromBits(srcU: Uint32Array, o: number, out: Uint16Array, d: number, dim: number): void {
  for (let j = 0; j < dim; j++) {
    const x = srcU[o + j]!;
    out[d + j] = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 0x40) & 0xffff : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
}

/** bfloat16 -> float32 (exact), natively when available. */
export function decodeBf16(n: number, src: Uint16Array, dst: Float32Array): void {
  if (decodeHalf(true, n, src, dst)) return;
  const u = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
}
