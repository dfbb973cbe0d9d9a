/* bf16 variants of the numerically sensitive fused kernels, for train.precision=bf16:
 * the forward kernel computes in fp32 exactly as its fp32 twin (nn.c, basic.c) and, in
 * the same row loop, writes the bf16 copy of the tensor its backward needs (GELU's and
 * LayerNorm's input, the cross-entropy logits, the softmax output); the backward kernel
 * reads that bf16 copy and computes in fp32. The fp32 activation itself can then be
 * released after the forward (src/autograd/saved-pack.ts), halving what is held for
 * backward. Conversions are bit-exact with src/core/dtype.ts (kernel-math.h).
 * Oracle: src/backend/reference/nn-lowp.ts. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "kernel-math.h"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* y = gelu(x) (tanh form, written as x·sigmoid(2k(x + c x³))), xh = bf16(x). */
void athn_gelu_fwd_bf16pack(int64_t n, const float *x, float *y, uint16_t *xh) {
#pragma omp parallel for if (n >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    y[i] = v / (1.0f + fast_expf(-2.0f * GELU_K * (v + GELU_C * v * v * v)));
    xh[i] = f32_to_bf16(v);
  }
}

/* dx (+)= gelu'(x) · dy with x read from its bf16 copy. */
void athn_gelu_bwd_bf16in(int64_t n, const uint16_t *xh, const float *dy, float *dx, int acc) {
#pragma omp parallel for if (n >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    const float xv = bf16_to_f32(xh[i]), x2 = xv * xv;
    const float s = 1.0f / (1.0f + fast_expf(-2.0f * GELU_K * (xv + GELU_C * x2 * xv)));
    const float d = dy[i] * (s + 2.0f * xv * s * (1.0f - s) * GELU_K * (1.0f + 3.0f * GELU_C * x2));
    if (acc) dx[i] += d;
    else dx[i] = d;
  }
}

/* LayerNorm forward (as athn_layernorm_fwd_f32) that also writes xh = bf16(x); the
 * backward is athn_layernorm_bwd_bf16in in nn.c (it shares the fp32 kernel's loops). */
void athn_layernorm_fwd_bf16pack(const float *x, const float *w, const float *b, float *y, float *mean, float *rstd,
                                 uint16_t *xh, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for if (rows * C >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = x + i * C;
    float *yr = y + i * C;
    uint16_t *hr = xh + i * C;
    float mu, rs;
    layernorm_row_stats(xr, C, eps, &mu, &rs);
    for (int64_t j = 0; j < C; j++) {
      yr[j] = (xr[j] - mu) * rs * w[j] + (b ? b[j] : 0.f);
      hr[j] = f32_to_bf16(xr[j]);
    }
    mean[i] = mu;
    rstd[i] = rs;
  }
}

/* Cross-entropy forward (as athn_cross_entropy_fwd_f32: lse per row, returns the summed
 * loss of counted rows) that also writes the bf16 logits for backward. */
double athn_cross_entropy_fwd_bf16pack(const float *logits, const int32_t *targets, float *lse, uint16_t *lh,
                                       int64_t rows, int64_t V, int32_t ignore_index) {
  double total = 0.0;
#pragma omp parallel for if (rows * V >= PAR_MIN) schedule(static) reduction(+ : total)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = logits + i * V;
    uint16_t *hr = lh + i * V;
    float m = row_max(xr, V);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; j++) s += fast_expf(xr[j] - m);
    for (int64_t j = 0; j < V; j++) hr[j] = f32_to_bf16(xr[j]);
    float l = m + logf(s);
    lse[i] = l;
    int32_t t = targets[i];
    if (t != ignore_index) total += (double)(l - xr[t]);
  }
  return total;
}

/* dlogits (+)= scale · (softmax(logits) − onehot(t)) from the bf16 logits and the fp32 lse
 * of the forward (the probabilities are exp(bf16(x) − lse): each is off by the logit's
 * bf16 rounding, relative ≤ 2^-9 · |x|, the same as autocast's bf16 logits). */
void athn_cross_entropy_bwd_bf16in(const uint16_t *lh, const int32_t *targets, const float *lse, float *dlogits,
                                   int64_t rows, int64_t V, int32_t ignore_index, float scale, int acc) {
#pragma omp parallel for if (rows * V >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    int32_t t = targets[i];
    const uint16_t *hr = lh + i * V;
    float *dr = dlogits + i * V;
    if (t == ignore_index) {
      if (!acc) memset(dr, 0, (size_t)V * sizeof(float));
      continue;
    }
    float l = lse[i];
    if (acc) {
      for (int64_t j = 0; j < V; j++) dr[j] += scale * fast_expf(bf16_to_f32(hr[j]) - l);
    } else {
      for (int64_t j = 0; j < V; j++) dr[j] = scale * fast_expf(bf16_to_f32(hr[j]) - l);
    }
    dr[t] -= scale;
  }
}

/* Softmax forward (fp32 output y, as athn_softmax_fwd_f32) plus yh = bf16(y) for backward. */
void athn_softmax_fwd_bf16pack(const float *x, float *y, uint16_t *yh, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = x + i * cols;
    float *yr = y + i * cols;
    uint16_t *hr = yh + i * cols;
    float m = row_max(xr, cols);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) {
      float e = fast_expf(xr[j] - m);
      yr[j] = e;
      s += e;
    }
    float inv = 1.0f / s;
    for (int64_t j = 0; j < cols; j++) {
      yr[j] *= inv;
      hr[j] = f32_to_bf16(yr[j]);
    }
  }
}

/* dx (+)= y · (dy − Σ dy·y) with y read from its bf16 copy. */
void athn_softmax_bwd_bf16in(const uint16_t *yh, const float *dy, float *dx, int64_t rows, int64_t cols, int acc) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const uint16_t *hr = yh + i * cols;
    const float *gr = dy + i * cols;
    float *dr = dx + i * cols;
    float s = 0.f;
    for (int64_t j = 0; j < cols; j++) s += bf16_to_f32(hr[j]) * gr[j];
    if (acc) {
      for (int64_t j = 0; j < cols; j++) dr[j] += bf16_to_f32(hr[j]) * (gr[j] - s);
    } else {
      for (int64_t j = 0; j < cols; j++) dr[j] = bf16_to_f32(hr[j]) * (gr[j] - s);
    }
  }
}
