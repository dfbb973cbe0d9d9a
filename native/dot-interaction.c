/* DLRM dot interaction (float32): every sample's pairwise dot products of its bottom-MLP
 * output and its F field embeddings, written after the bottom output itself, i.e. the
 * top MLP's input concat(x, triu(Z Z^T)) in one pass. It replaces per-sample GEMMs of
 * M x D by D x M (M = F + 1, typically 27 x 16: far too small for BLAS) plus a concat and
 * an index gather. Oracle: src/backend/reference/dot-interaction.ts.
 *
 *   x (B, D), e (F, B, D) field-major; out (B, D + P), P = M (M - 1) / 2
 *   out[b, 0:D] = x[b];  out[b, D + p(i,j)] = <z_i, z_j>, i < j, z_0 = x[b], z_{f+1} = e[f, b]
 * Backward: dz_i = sum_j g_ij z_j (plus g[b, 0:D] for z_0), written (acc = 0) or added
 * into dx / de (either may be NULL).
 *
 * Both directions work on blocks of LN = 8 samples with the sample as the innermost
 * (vector) index: the block's vectors are transposed to zt[i][d][lane], so a pair's 8 dot
 * products are D vector multiply-adds with no horizontal sum, and the backward's
 * dz_i += g_ij z_j, dz_j += g_ij z_i are D each too. Fixed-length lane loops vectorize
 * without prologues; per-pair dot products of length D (16) would each end in a
 * horizontal sum, and a loop over j of runtime length in peeling. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "kernel-math.h"

#define LN 8

static inline const float *zvec(const float *x, const float *e, int64_t i, int64_t b, int64_t B, int64_t D) {
  return i == 0 ? x + b * D : e + ((i - 1) * B + b) * D;
}

/* Sample lanes [b0, b0 + nl) of z_i into zt[i][d][lane] (lanes past nl zero). */
static void load_block(const float *x, const float *e, float *zt, int64_t b0, int64_t nl, int64_t M, int64_t B, int64_t D) {
  for (int64_t i = 0; i < M; i++) {
    float *t = zt + i * D * LN;
    for (int64_t l = 0; l < LN; l++) {
      if (l < nl) {
        const float *z = zvec(x, e, i, b0 + l, B, D);
        for (int64_t d = 0; d < D; d++) t[d * LN + l] = z[d];
      } else for (int64_t d = 0; d < D; d++) t[d * LN + l] = 0.f;
    }
  }
}

/* Returns 0, or -1 when a thread could not allocate its scratch (nothing trustworthy written). */
int athn_dot_interaction_fwd_f32(const float *x, const float *e, float *out, int64_t B, int64_t F, int64_t D) {
  const int64_t M = F + 1, W = D + M * (M - 1) / 2, NB = (B + LN - 1) / LN;
  int failed = 0;
#pragma omp parallel if (B * M * M * D >= 4 * PAR_MIN) reduction(| : failed)
  {
    float *zt = (float *)malloc((size_t)(M * D * LN) * sizeof(float));
    if (!zt) failed = 1;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < NB; blk++) {
      if (!zt) continue;
      const int64_t b0 = blk * LN, nl = B - b0 < LN ? B - b0 : LN;
      load_block(x, e, zt, b0, nl, M, B, D);
      for (int64_t l = 0; l < nl; l++) memcpy(out + (b0 + l) * W, x + (b0 + l) * D, (size_t)D * sizeof(float));
      int64_t p = D;
      for (int64_t i = 0; i < M; i++) {
        const float *zi = zt + i * D * LN;
        for (int64_t j = i + 1; j < M; j++, p++) {
          const float *zj = zt + j * D * LN;
          float acc[LN] = {0};
          for (int64_t d = 0; d < D; d++) {
#pragma omp simd
            for (int64_t l = 0; l < LN; l++) acc[l] += zi[d * LN + l] * zj[d * LN + l];
          }
          for (int64_t l = 0; l < nl; l++) out[(b0 + l) * W + p] = acc[l];
        }
      }
    }
    free(zt);
  }
  return failed ? -1 : 0;
}

#define DC 8

/* Returns 0, or -1 when a thread could not allocate its scratch (nothing trustworthy written). */
int athn_dot_interaction_bwd_f32(const float *g, const float *x, const float *e, float *dx, float *de,
                                 int64_t B, int64_t F, int64_t D, int acc_x, int acc_e) {
  const int64_t M = F + 1, W = D + M * (M - 1) / 2, NB = (B + LN - 1) / LN;
  int failed = 0;
#pragma omp parallel if (B * M * M * D >= 4 * PAR_MIN) reduction(| : failed)
  {
    /* The block's Z as [i][d][lane] and the pair gradients as a symmetric S[i][j][lane] (zero diagonal). */
    float *zt = (float *)malloc((size_t)(M * D * LN + M * M * LN) * sizeof(float));
    if (!zt) failed = 1;
    float *st = zt ? zt + M * D * LN : NULL;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < NB; blk++) {
      if (!zt) continue;
      const int64_t b0 = blk * LN, nl = B - b0 < LN ? B - b0 : LN;
      load_block(x, e, zt, b0, nl, M, B, D);
      memset(st, 0, (size_t)(M * M * LN) * sizeof(float));
      for (int64_t l = 0; l < nl; l++) {
        const float *gp = g + (b0 + l) * W + D;
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = i + 1; j < M; j++) { const float w = *gp++; st[(i * M + j) * LN + l] = w; st[(j * M + i) * LN + l] = w; }
      }
      for (int64_t i = 0; i < M; i++) {
        const float *si = st + i * M * LN;
        for (int64_t d0 = 0; d0 < D; d0 += DC) {
          const int64_t dc = D - d0 < DC ? D - d0 : DC;
          /* dz_i[d0 .. d0 + DC) for the block's lanes, kept in registers over j. */
          float acc[DC][LN] = {{0}};
          if (dc == DC) {
            for (int64_t j = 0; j < M; j++) {
              const float *w = si + j * LN, *zj = zt + (j * D + d0) * LN;
              for (int64_t dd = 0; dd < DC; dd++)
#pragma omp simd
                for (int64_t l = 0; l < LN; l++) acc[dd][l] += w[l] * zj[dd * LN + l];
            }
          } else {
            for (int64_t j = 0; j < M; j++) {
              const float *w = si + j * LN, *zj = zt + (j * D + d0) * LN;
              for (int64_t dd = 0; dd < dc; dd++)
#pragma omp simd
                for (int64_t l = 0; l < LN; l++) acc[dd][l] += w[l] * zj[dd * LN + l];
            }
          }
          for (int64_t l = 0; l < nl; l++) {
            const int64_t b = b0 + l;
            float *o = i == 0 ? (dx ? dx + b * D : NULL) : (de ? de + ((i - 1) * B + b) * D : NULL);
            if (!o) continue;
            const int acc_o = i == 0 ? acc_x : acc_e;
            for (int64_t dd = 0; dd < dc; dd++) {
              /* z_0's own gradient (the x columns of the output) joins its pair terms. */
              const float v = acc[dd][l] + (i == 0 ? g[b * W + d0 + dd] : 0.f);
              o[d0 + dd] = acc_o ? o[d0 + dd] + v : v;
            }
          }
        }
      }
    }
    free(zt);
  }
  return failed ? -1 : 0;
}
