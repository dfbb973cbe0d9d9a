// koffi bindings of native/optim.c. Arrays are passed as (sub)array views, which
// koffi hands to C as pointers without copying; lengths are element counts.
import { nativeFamily } from './native.js';

export interface NativeOptim {
  /** See athn_adamw_f32: scalars precomputed in double by the caller. */
  adamw(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, n: number,
    decay: number, beta1: number, oneMinusBeta1: number, beta2: number, oneMinusBeta2: number,
    eps: number, stepSize: number, bc2Sqrt: number, gradScale: number): void;
  sgd(p: Float32Array, g: Float32Array, buf: Float32Array | null, n: number, lr: number, momentum: number,
    oneMinusDampening: number, wd: number, nesterov: number, first: number, gradScale: number): void;
  adagrad(p: Float32Array, g: Float32Array, sum: Float32Array, n: number, clr: number, wd: number, eps: number,
    gradScale: number): void;
  sumsq(x: Float32Array, n: number): number;
  scale(x: Float32Array, n: number, s: number): void;
}

const bind = nativeFamily<NativeOptim>({
  adamw: 'void athn_adamw_f32(_Inout_ float *p, const float *g, _Inout_ float *m, _Inout_ float *v, int64_t n, float decay, float beta1, float omb1, float beta2, float omb2, float eps, float step_size, float bc2_sqrt, float grad_scale)',
  sgd: 'void athn_sgd_f32(_Inout_ float *p, const float *g, _Inout_ float *buf, int64_t n, float lr, float momentum, float omd, float wd, int nesterov, int first, float grad_scale)',
  adagrad: 'void athn_adagrad_f32(_Inout_ float *p, const float *g, _Inout_ float *sum, int64_t n, float clr, float wd, float eps, float grad_scale)',
  sumsq: 'double athn_sumsq_f32(const float *x, int64_t n)',
  scale: 'void athn_scale_f32(_Inout_ float *x, int64_t n, float s)',
});

/** The bound kernels, or null (no library, forced reference, or an older build without them). */
export function nativeOptim(): NativeOptim | null {
  return bind();
}

/** `a[off, off+n)` as a view (the whole array when it already is exactly that). */
export function span<T extends Float32Array | Float64Array>(a: T, off: number, n: number): T {
  return off === 0 && a.length === n ? a : (a.subarray(off, off + n) as T);
}
