/* One row of the attention softmax, forward and backward, shared by the fp32 kernels
 * (attention.c) and the 16-bit ones (attention-lowp.c): they differ only in how P is
 * stored, so the row math is written once. static inline so each caller's loop
 * vectorises it. */
#ifndef ATHN_ATTENTION_ROW_H
#define ATHN_ATTENTION_ROW_H
#include <math.h>
#include <stdint.h>
#include "kernel-math.h"

/* Entries of row i that the causal mask keeps (top-left aligned, like PyTorch's is_causal). */
static inline int64_t attn_row_len(int64_t i, int64_t Tk, int causal) {
  return causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
}

/* In place: s[0..n) = softmax(scale * s[0..n)), s[n..Tk) = 0. */
static inline void attn_softmax_row(float *s, int64_t n, int64_t Tk, float scale) {
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

/* In place on g (= dP): g = alpha * p * (g - rowsum(g * p)) on [0, n), 0 on [n, Tk). */
static inline void attn_softmax_bwd_row(const float *p, float *g, int64_t n, int64_t Tk, float alpha) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) s += p[j] * g[j];
#pragma omp simd
  for (int64_t j = 0; j < n; j++) g[j] = alpha * p[j] * (g[j] - s);
  for (int64_t j = n; j < Tk; j++) g[j] = 0.f;
}
#endif
