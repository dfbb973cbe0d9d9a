// koffi bindings for native/nn.c. Declared once, on first use; null when the kernel
// library is missing (or was built before nn.c existed), and the dispatcher then
// falls back to the reference kernels.
import { nativeFamily } from './native.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;

export interface NativeNn {
  softmaxFwd: Fn;
  logSoftmaxFwd: Fn;
  softmaxBwd: Fn;
  logSoftmaxBwd: Fn;
  crossEntropyFwd: Fn;
  crossEntropyBwd: Fn;
  layerNormFwd: Fn;
  layerNormBwd: Fn;
  rmsNormFwd: Fn;
  rmsNormBwd: Fn;
  embeddingFwd: Fn;
  embeddingBwd: Fn;
  dropoutFwd: Fn;
  dropoutBwd: Fn;
  attnSoftmax: Fn;
  attnSoftmaxBwd: Fn;
  biasGrad: Fn;
  fillRows: Fn;
}

const bind = nativeFamily<NativeNn>({
  softmaxFwd: 'void athn_softmax_fwd_f32(const float *x, _Inout_ float *y, int64_t rows, int64_t cols)',
  logSoftmaxFwd: 'void athn_log_softmax_fwd_f32(const float *x, _Inout_ float *y, int64_t rows, int64_t cols)',
  softmaxBwd: 'void athn_softmax_bwd_f32(const float *y, const float *dy, _Inout_ float *dx, int64_t rows, int64_t cols, int acc)',
  logSoftmaxBwd: 'void athn_log_softmax_bwd_f32(const float *y, const float *dy, _Inout_ float *dx, int64_t rows, int64_t cols, int acc)',
  crossEntropyFwd: 'double athn_cross_entropy_fwd_f32(const float *logits, const int32_t *targets, _Inout_ float *lse, int64_t rows, int64_t V, int32_t ignore)',
  crossEntropyBwd: 'void athn_cross_entropy_bwd_f32(const float *logits, const int32_t *targets, const float *lse, _Inout_ float *dlogits, int64_t rows, int64_t V, int32_t ignore, float scale, int acc)',
  layerNormFwd: 'void athn_layernorm_fwd_f32(const float *x, const float *w, const float *b, _Inout_ float *y, _Inout_ float *mean, _Inout_ float *rstd, int64_t rows, int64_t C, float eps)',
  layerNormBwd: 'void athn_layernorm_bwd_f32(const float *dy, const float *x, const float *w, const float *mean, const float *rstd, _Inout_ float *dx, _Inout_ float *dw, _Inout_ float *db, int64_t rows, int64_t C, int acc)',
  rmsNormFwd: 'void athn_rmsnorm_fwd_f32(const float *x, const float *w, _Inout_ float *y, _Inout_ float *rstd, int64_t rows, int64_t C, float eps)',
  rmsNormBwd: 'void athn_rmsnorm_bwd_f32(const float *dy, const float *x, const float *w, const float *rstd, _Inout_ float *dx, _Inout_ float *dw, int64_t rows, int64_t C, int acc)',
  embeddingFwd: 'void athn_embedding_fwd_f32(const float *w, int64_t ldw, const int32_t *idx, _Inout_ float *out, int64_t n, int64_t C)',
  embeddingBwd: 'void athn_embedding_bwd_f32(const float *dout, const int32_t *idx, _Inout_ float *dw, int64_t n, int64_t C)',
  // The mask is uint32_t * in C; int32_t here because tensors store it as Int32Array (same ABI).
  dropoutFwd: 'void athn_dropout_fwd_f32(const float *x, _Inout_ float *y, _Inout_ int32_t *mask, int64_t n, uint32_t seed, double threshold, float scale)',
  dropoutBwd: 'void athn_dropout_bwd_f32(const float *dy, const int32_t *mask, _Inout_ float *dx, int64_t n, float scale, int acc)',
  attnSoftmax: 'void athn_attn_softmax_f32(_Inout_ float *S, int64_t mats, int64_t Tq, int64_t Tk, float scale, int causal)',
  attnSoftmaxBwd: 'void athn_attn_softmax_bwd_f32(const float *P, _Inout_ float *dP, int64_t mats, int64_t Tq, int64_t Tk, float alpha, int causal)',
  biasGrad: 'void athn_bias_grad_f32(const float *dy, _Inout_ float *db, int64_t rows, int64_t cols, int64_t ld)',
  fillRows: 'void athn_fill_rows_f32(_Inout_ float *y, const float *bias, int64_t rows, int64_t cols, int64_t ld)',
});

/** The bound kernels, or null (no library, forced reference, or an older build without them). */
export function nativeNn(): NativeNn | null {
  return bind();
}
