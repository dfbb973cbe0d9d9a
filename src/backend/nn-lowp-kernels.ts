// Kernel table of the bf16 saved-activation variants (native/nn-lowp.c, and the LayerNorm
// backward in native/nn.c): native above nativeMinElements(), else the references in
// reference/nn-lowp.ts. Arrays start at element 0: ops pass subarrays.
import { nativeFamily } from './native.js';
import { nativeMinElements } from './dispatch.js';
import * as ref from './reference/nn-lowp.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
interface NativeNnLowp {
  geluFwd: Fn; geluBwd: Fn; lnFwd: Fn; lnBwd: Fn; ceFwd: Fn; ceBwd: Fn; smFwd: Fn; smBwd: Fn;
}

const bind = nativeFamily<NativeNnLowp>({
  geluFwd: 'void athn_gelu_fwd_bf16pack(int64_t n, const float *x, _Inout_ float *y, _Inout_ uint16_t *xh)',
  geluBwd: 'void athn_gelu_bwd_bf16in(int64_t n, const uint16_t *xh, const float *dy, _Inout_ float *dx, int acc)',
  lnFwd: 'void athn_layernorm_fwd_bf16pack(const float *x, const float *w, const float *b, _Inout_ float *y, _Inout_ float *mean, _Inout_ float *rstd, _Inout_ uint16_t *xh, int64_t rows, int64_t C, float eps)',
  lnBwd: 'void athn_layernorm_bwd_bf16in(const float *dy, const uint16_t *xh, const float *w, const float *mean, const float *rstd, _Inout_ float *dx, _Inout_ float *dw, _Inout_ float *db, int64_t rows, int64_t C, int acc)',
  ceFwd: 'double athn_cross_entropy_fwd_bf16pack(const float *logits, const int32_t *targets, _Inout_ float *lse, _Inout_ uint16_t *lh, int64_t rows, int64_t V, int32_t ignore)',
  ceBwd: 'void athn_cross_entropy_bwd_bf16in(const uint16_t *lh, const int32_t *targets, const float *lse, _Inout_ float *dlogits, int64_t rows, int64_t V, int32_t ignore, float scale, int acc)',
  smFwd: 'void athn_softmax_fwd_bf16pack(const float *x, _Inout_ float *y, _Inout_ uint16_t *yh, int64_t rows, int64_t cols)',
  smBwd: 'void athn_softmax_bwd_bf16in(const uint16_t *yh, const float *dy, _Inout_ float *dx, int64_t rows, int64_t cols, int acc)',
});

function nat(n: number): NativeNnLowp | null {
  return n >= nativeMinElements() ? bind() : null;
}

export function geluFwdBf16Pack(n: number, x: Float32Array, y: Float32Array, xh: Uint16Array): void {
  const k = nat(n);
  if (k) k.geluFwd(n, x, y, xh);
  else ref.geluFwdBf16PackRef(n, x, y, xh);
}

export function geluBwdBf16In(n: number, xh: Uint16Array, dy: Float32Array, dx: Float32Array, acc: boolean): void {
  const k = nat(n);
  if (k) k.geluBwd(n, xh, dy, dx, acc ? 1 : 0);
  else ref.geluBwdBf16InRef(n, xh, dy, dx, acc);
}

export function layerNormFwdBf16Pack(x: Float32Array, w: Float32Array, b: Float32Array | null, y: Float32Array, mean: Float32Array, rstd: Float32Array,
  xh: Uint16Array, rows: number, C: number, eps: number): void {
  const k = nat(rows * C);
  if (k) k.lnFwd(x, w, b, y, mean, rstd, xh, rows, C, eps);
  else ref.layerNormFwdBf16PackRef(x, w, b, y, mean, rstd, xh, rows, C, eps);
}

export function layerNormBwdBf16In(dy: Float32Array, xh: Uint16Array, w: Float32Array, mean: Float32Array, rstd: Float32Array,
  dx: Float32Array | null, dw: Float32Array | null, db: Float32Array | null, rows: number, C: number, acc: boolean): void {
  const k = nat(rows * C);
  if (k) k.lnBwd(dy, xh, w, mean, rstd, dx, dw, db, rows, C, acc ? 1 : 0);
  else ref.layerNormBwdBf16InRef(dy, xh, w, mean, rstd, dx, dw, db, rows, C, acc);
}

export function crossEntropyFwdBf16Pack(logits: Float32Array, targets: Int32Array, lse: Float32Array, lh: Uint16Array, rows: number, V: number, ignoreIndex: number): number {
  const k = nat(rows * V);
  if (k) return k.ceFwd(logits, targets, lse, lh, rows, V, ignoreIndex) as number;
  return ref.crossEntropyFwdBf16PackRef(logits, targets, lse, lh, rows, V, ignoreIndex);
}

export function crossEntropyBwdBf16In(lh: Uint16Array, targets: Int32Array, lse: Float32Array, dlogits: Float32Array, rows: number, V: number,
  ignoreIndex: number, scale: number, acc: boolean): void {
  const k = nat(rows * V);
  if (k) k.ceBwd(lh, targets, lse, dlogits, rows, V, ignoreIndex, scale, acc ? 1 : 0);
  else ref.crossEntropyBwdBf16InRef(lh, targets, lse, dlogits, rows, V, ignoreIndex, scale, acc);
}

export function softmaxFwdBf16Pack(x: Float32Array, y: Float32Array, yh: Uint16Array, rows: number, cols: number): void {
  const k = nat(rows * cols);
  if (k) k.smFwd(x, y, yh, rows, cols);
  else ref.softmaxFwdBf16PackRef(x, y, yh, rows, cols);
}

export function softmaxBwdBf16In(yh: Uint16Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number, acc: boolean): void {
  const k = nat(rows * cols);
  if (k) k.smBwd(yh, dy, dx, rows, cols, acc ? 1 : 0);
  else ref.softmaxBwdBf16InRef(yh, dy, dx, rows, cols, acc);
}
