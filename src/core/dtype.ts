// Data types. bfloat16 and float16 are 16-bit storage only (Uint16Array): they
// are for memory and wire formats, and compute happens after conversion to float32.

export type DType = 'float32' | 'float64' | 'int32' | 'bfloat16' | 'float16';
export type Storage = Float32Array | Float64Array | Int32Array | Uint16Array;
export type FloatDType = 'float32' | 'float64';

export const DTYPES: readonly DType[] = ['float32', 'float64', 'int32', 'bfloat16', 'float16'];

export function bytesPerElement(d: DType): number {
  return d === 'float64' ? 8 : d === 'float32' || d === 'int32' ? 4 : 2;
}

export function allocStorage(d: DType, n: number): Storage {
  switch (d) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'int32': return new Int32Array(n);
    case 'bfloat16': case 'float16': return new Uint16Array(n);
  }
}

export function isFloat(d: DType): boolean {
  return d !== 'int32';
}

export function assertDType(d: string, where: string): DType {
  if ((DTYPES as readonly string[]).includes(d)) return d as DType;
  throw new Error(`${where}: unknown dtype '${d}' (expected one of ${DTYPES.join(', ')})`);
}

// Reference conversions. Round-to-nearest-even, NaN stays NaN, overflow goes to Inf:
// the same results as PyTorch's .to(torch.bfloat16) / .half().
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff; // quiet NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0]!;
}

export function f32ToF16(x: number): number {
  f32[0] = x;
  const u = u32[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  return sign | r;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
