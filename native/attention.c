/* Attention softmax kernels (float32) for src/ops/attention.ts (through
 * src/backend/nn-kernels.ts). They run in place on the score matrices between
 * attention's GEMMs and apply the causal mask themselves, so no mask tensor is built.
 * The oracle is src/backend/reference/nn.ts. */
#include <math.h>
#include <stdint.h>
#include "kernel-math.h"

/* In place on S (mats matrices of Tq x Tk, contiguous): P = softmax(scale * S) per row,
 * with j > i masked (causal, top-left aligned like PyTorch's is_causal). Masked
 * entries are written as 0, so callers may leave them uncomputed in S. */
void athn_attn_softmax_f32(float *S, int64_t mats, int64_t Tq, int64_t Tk, float scale, int causal) {
  int64_t rows = mats * Tq;
#pragma omp parallel for if (rows * Tk >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    float *s = S + r * Tk;
    int64_t i = r % Tq;
    int64_t n = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
    float m, sum = 0.f;
    if (scale > 0) m = scale * row_max(s, n);
    else {
      m = -INFINITY;
      for (int64_t j = 0; j < n; j++) m = scale * s[j] > m ? scale * s[j] : m;
    }
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
      float e = fast_expf(scale * s[j] - m);
      s[j] = e;
      sum += e;
    }
    float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) s[j] *= inv;
    for (int64_t j = n; j < Tk; j++) s[j] = 0.f;
  }
}

/* In place on dP: dS = alpha * P * (dP - rowsum(dP * P)); masked entries set to 0. */
void athn_attn_softmax_bwd_f32(const float *P, float *dP, int64_t mats, int64_t Tq, int64_t Tk, float alpha, int causal) {
  int64_t rows = mats * Tq;
#pragma omp parallel for if (rows * Tk >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *p = P + r * Tk;
    float *g = dP + r * Tk;
    int64_t i = r % Tq;
    int64_t n = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; j++) s += p[j] * g[j];
#pragma omp simd
    for (int64_t j = 0; j < n; j++) g[j] = alpha * p[j] * (g[j] - s);
    for (int64_t j = n; j < Tk; j++) g[j] = 0.f;
  }
}
