// Reference (and oracle) for the strided 2-D conversions of mixed-precision GEMM
// operands in native/cast.c: round-to-nearest-even through src/core/dtype.ts.
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../core/dtype.js';

export type Lowp = 'bfloat16' | 'float16';

/** y[r, i] = round16(x[r, i] · scale) for a rows × cols matrix (leading dims ldx, ldy). */
export function to16Ref(kind: Lowp, rows: number, cols: number, x: Float32Array, xOff: number, ldx: number,
  y: Uint16Array, yOff: number, ldy: number, scale: number): void {
  const f = kind === 'bfloat16' ? f32ToBf16 : f32ToF16;
  const s = Math.fround(scale);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) y[yOff + r * ldy + i] = f(Math.fround(x[xOff + r * ldx + i]! * s));
  }
}

export function from16Ref(kind: Lowp, rows: number, cols: number, x: Uint16Array, xOff: number, ldx: number,
  y: Float32Array, yOff: number, ldy: number): void {
  const f = kind === 'bfloat16' ? bf16ToF32 : f16ToF32;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) y[yOff + r * ldy + i] = f(x[xOff + r * ldx + i]!);
  }
}
