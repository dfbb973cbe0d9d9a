// koffi bindings for native/basic.c. Typed arrays cross zero-copy; element offsets are
// passed as ints so the hot path never creates subarray views. Strided kernels read
// their layout from one shared Int32Array (`meta`): shape[nd], then one strides[nd]
// block per operand.
import { nativeKernels } from './native.js';
import { pool } from '../core/buffer-pool.js';

type Arr = Float32Array | Float64Array | Int32Array | Uint16Array;

export interface NativeBasic {
  /** Shared layout scratch for the strided kernels (filled by the caller right before the call). */
  meta: Int32Array;
  binary: (op: number, nd: number, meta: Int32Array, out: Float32Array, oOff: number, a: Float32Array, aOff: number, b: Float32Array, bOff: number) => void;
  unary: (op: number, n: number, x: Float32Array, xOff: number, y: Float32Array, yOff: number, p: number) => void;
  unaryBwd: (op: number, n: number, x: Float32Array, xOff: number, y: Float32Array, yOff: number, dy: Float32Array, dyOff: number,
    dx: Float32Array, dxOff: number, p: number, acc: number) => void;
  copyStrided: (elsize: number, nd: number, meta: Int32Array, dst: Arr, dOff: number, src: Arr, sOff: number) => void;
  sum: (nd: number, meta: Int32Array, x: Float32Array, xOff: number, out: Float32Array, oOff: number, outN: number, scale: number) => void;
  max: (outer: number, len: number, inner: number, x: Float32Array, xOff: number, vals: Float32Array, vOff: number, idx: Int32Array, iOff: number) => void;
  gather: (nd: number, meta: Int32Array, out: Float32Array, oOff: number, x: Float32Array, xOff: number, index: Int32Array, iOff: number,
    axStride: number, axLen: number) => number;
  scatterAdd: (nd: number, meta: Int32Array, dx: Float32Array, dOff: number, g: Float32Array, gOff: number, index: Int32Array, iOff: number,
    axStride: number, axLen: number) => number;
  whereI32: (nd: number, meta: Int32Array, out: Float32Array, oOff: number, cond: Int32Array, cOff: number, a: Float32Array, aOff: number,
    b: Float32Array, bOff: number) => void;
  whereF32: (nd: number, meta: Int32Array, out: Float32Array, oOff: number, cond: Float32Array, cOff: number, a: Float32Array, aOff: number,
    b: Float32Array, bOff: number) => void;
  f32ToBf16: (n: number, x: Float32Array, xOff: number, y: Uint16Array, yOff: number) => void;
  bf16ToF32: (n: number, x: Uint16Array, xOff: number, y: Float32Array, yOff: number) => void;
  f32ToF16: (n: number, x: Float32Array, xOff: number, y: Uint16Array, yOff: number) => void;
  f16ToF32: (n: number, x: Uint16Array, xOff: number, y: Float32Array, yOff: number) => void;
  f32ToF64: (n: number, x: Float32Array, xOff: number, y: Float64Array, yOff: number) => void;
  f64ToF32: (n: number, x: Float64Array, xOff: number, y: Float32Array, yOff: number) => void;
}

let fns: NativeBasic | null | undefined;

/** The bound kernels, or null when the native library is unavailable (or lacks basic.c). */
export function nativeBasic(): NativeBasic | null {
  if (fns !== undefined) return fns;
  fns = null;
  const lib = nativeKernels();
  if (!lib) return null;
  try {
    fns = {
      meta: new Int32Array(16 * 5),
      binary: lib.func('void athn_binary_f32(int, int, const int *, float *, int, const float *, int, const float *, int)'),
      unary: lib.func('void athn_unary_f32(int, int, const float *, int, float *, int, float)'),
      unaryBwd: lib.func('void athn_unary_bwd_f32(int, int, const float *, int, const float *, int, const float *, int, float *, int, float, int)'),
      copyStrided: lib.func('void athn_copy_strided(int, int, const int *, void *, int, const void *, int)'),
      sum: lib.func('void athn_sum_f32(int, const int *, const float *, int, float *, int, int, float)'),
      max: lib.func('void athn_max_f32(int, int, int, const float *, int, float *, int, int *, int)'),
      gather: lib.func('int athn_gather_f32(int, const int *, float *, int, const float *, int, const int *, int, int, int)'),
      scatterAdd: lib.func('int athn_scatter_add_f32(int, const int *, float *, int, const float *, int, const int *, int, int, int)'),
      whereI32: lib.func('void athn_where_i32_f32(int, const int *, float *, int, const int *, int, const float *, int, const float *, int)'),
      whereF32: lib.func('void athn_where_f32_f32(int, const int *, float *, int, const float *, int, const float *, int, const float *, int)'),
      f32ToBf16: lib.func('void athn_f32_to_bf16(int, const float *, int, uint16_t *, int)'),
      bf16ToF32: lib.func('void athn_bf16_to_f32(int, const uint16_t *, int, float *, int)'),
      f32ToF16: lib.func('void athn_f32_to_f16(int, const float *, int, uint16_t *, int)'),
      f16ToF32: lib.func('void athn_f16_to_f32(int, const uint16_t *, int, float *, int)'),
      f32ToF64: lib.func('void athn_f32_to_f64(int, const float *, int, double *, int)'),
      f64ToF32: lib.func('void athn_f64_to_f32(int, const double *, int, float *, int)'),
    };
    installHugePageAdvice(lib);
  } catch (e) {
    // An older build/libathanor.so without basic.c: stay on the reference kernels.
    process.stderr.write(`athanor: native basic kernels unavailable (${(e as Error).message}); rebuild with \`npm install\`\n`);
    fns = null;
  }
  return fns;
}

/** Buffers at least this big get transparent huge pages (ATHANOR_HUGEPAGES=0 turns it off). */
const HUGE_MIN_BYTES = 4 << 20;

function installHugePageAdvice(lib: NonNullable<ReturnType<typeof nativeKernels>>): void {
  if (process.env.ATHANOR_HUGEPAGES === '0' || process.platform !== 'linux' || pool.onAllocate) return;
  const advise: (p: ArrayBufferView, bytes: number) => number = lib.func('int athn_advise_hugepages(void *, double)');
  // Fresh pool buffers are untouched (calloc'ed) pages, so the advice takes effect on first write.
  pool.onAllocate = (buf) => {
    if (buf.byteLength >= HUGE_MIN_BYTES) advise(buf, buf.byteLength);
  };
}
