/* Mixed-precision variants of the attention softmax kernels (attention.c): they read
 * fp32 scores and write the probabilities P in 16 bits (bf16 or f16, the GEMM operand
 * and the activation saved for backward, half the bytes of fp32 P), and read that 16-bit
 * P in backward while computing in fp32. kind: 1 = bf16, 2 = f16.
 * Oracle: src/backend/reference/lowp.ts. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "kernel-math.h"
#include "cast-row.h"

/* P16 = round16(softmax(scale * S)) per row with the causal mask (masked entries 0);
 * S is used as fp32 scratch and left holding the unrounded probabilities. */
void athn_attn_softmax_16out(float *S, uint16_t *P16, int64_t mats, int64_t Tq, int64_t Tk, float scale, int causal, int kind) {
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
    row_f32_to_16(kind, Tk, s, P16 + r * Tk, 1.0f);
  }
}

/* In place on dP: dS = alpha * P * (dP - rowsum(dP * P)) with P read from 16 bits. */
void athn_attn_softmax_bwd_16in(const uint16_t *P16, float *dP, int64_t mats, int64_t Tq, int64_t Tk, float alpha, int causal, int kind) {
  int64_t rows = mats * Tq;
#pragma omp parallel if (rows * Tk >= PAR_MIN)
  {
    float *p = (float *)malloc(sizeof(float) * (size_t)(Tk > 0 ? Tk : 1));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      float *g = dP + r * Tk;
      int64_t i = r % Tq;
      int64_t n = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
      row_16_to_f32(kind, n, P16 + r * Tk, p);
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < n; j++) s += p[j] * g[j];
#pragma omp simd
      for (int64_t j = 0; j < n; j++) g[j] = alpha * p[j] * (g[j] - s);
      for (int64_t j = n; j < Tk; j++) g[j] = 0.f;
    }
    free(p);
  }
}
