/* DLRM dot interaction (float32): every sample's pairwise dot products of its bottom-MLP
 * output and its F field embeddings, written after the bottom output itself, i.e. the
 * top MLP's input concat(x, triu(Z Z^T)) in one pass. It replaces per-sample GEMMs of
 * M x D by D x M (M = F + 1, typically 27 x 16: far too small for BLAS) plus a concat and
 * an index gather. Oracle: src/backend/reference/dot-interaction.ts.
 *
 *   x (B, D), e (F, B, D) field-major; out (B, D + P), P = M (M - 1) / 2
 *   out[b, 0:D] = x[b];  out[b, D + p(i,j)] = <z_i, z_j>, i < j, z_0 = x[b], z_{f+1} = e[f, b]
 * Backward: dz_i = sum_j g_ij z_j (plus g[b, 0:D] for z_0), written (acc = 0) or added
 * into dx / de (either may be NULL). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernel-math.h"

static inline const float *zvec(const float *x, const float *e, int64_t i, int64_t b, int64_t B, int64_t D) {
  return i == 0 ? x + b * D : e + ((i - 1) * B + b) * D;
}

void athn_dot_interaction_fwd_f32(const float *x, const float *e, float *out, int64_t B, int64_t F, int64_t D) {
  const int64_t M = F + 1, W = D + M * (M - 1) / 2;
#pragma omp parallel for if (B * M * M * D >= 4 * PAR_MIN) schedule(static)
  for (int64_t b = 0; b < B; b++) {
    float *o = out + b * W;
    memcpy(o, x + b * D, (size_t)D * sizeof(float));
    o += D;
    for (int64_t i = 0; i < M; i++) {
      const float *zi = zvec(x, e, i, b, B, D);
      for (int64_t j = i + 1; j < M; j++) {
        const float *zj = e + ((j - 1) * B + b) * D;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; d++) s += zi[d] * zj[d];
        *o++ = s;
      }
    }
  }
}

/* Returns 0, or -1 when a thread could not allocate its M x D scratch (nothing trustworthy written). */
int athn_dot_interaction_bwd_f32(const float *g, const float *x, const float *e, float *dx, float *de,
                                 int64_t B, int64_t F, int64_t D, int acc_x, int acc_e) {
  const int64_t M = F + 1, W = D + M * (M - 1) / 2;
  int failed = 0;
#pragma omp parallel if (B * M * M * D >= 4 * PAR_MIN) reduction(| : failed)
  {
    float *dz = (float *)malloc((size_t)(M * D) * sizeof(float));
    if (!dz) failed = 1;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; b++) {
      if (!dz) continue;
      const float *gb = g + b * W;
      memcpy(dz, gb, (size_t)D * sizeof(float));
      memset(dz + D, 0, (size_t)((M - 1) * D) * sizeof(float));
      const float *gp = gb + D;
      for (int64_t i = 0; i < M; i++) {
        const float *zi = zvec(x, e, i, b, B, D);
        float *dzi = dz + i * D;
        for (int64_t j = i + 1; j < M; j++) {
          const float *zj = e + ((j - 1) * B + b) * D;
          float *dzj = dz + j * D;
          const float w = *gp++;
#pragma omp simd
          for (int64_t d = 0; d < D; d++) { dzi[d] += w * zj[d]; dzj[d] += w * zi[d]; }
        }
      }
      if (dx) {
        float *o = dx + b * D;
        if (acc_x) for (int64_t d = 0; d < D; d++) o[d] += dz[d];
        else memcpy(o, dz, (size_t)D * sizeof(float));
      }
      if (de) {
        for (int64_t f = 0; f < F; f++) {
          float *o = de + (f * B + b) * D;
          const float *s = dz + (f + 1) * D;
          if (acc_e) for (int64_t d = 0; d < D; d++) o[d] += s[d];
          else memcpy(o, s, (size_t)D * sizeof(float));
        }
      }
    }
    free(dz);
  }
  return failed ? -1 : 0;
}
