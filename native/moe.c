/* Mixture-of-experts combine kernels (float32). The token permutation itself reuses
 * the embedding gather / scatter-add kernels (nn.c); what is left is the weighted sum
 * of each token's K expert outputs, which would otherwise be a per-token loop over the
 * hidden dim in TypeScript. Oracle: src/backend/reference/moe.ts.
 *
 *   out[t] = sum_k gate[t,k] * y[slot[t*K+k]]        (slot -1: dropped, contributes 0)
 *   dy[slot[t*K+k]] (+)= gate[t,k] * dout[t]         (each slot belongs to one (t,k): no races)
 *   dgate[t,k]      +=  dot(dout[t], y[slot])
 * dy must be zero or fully overwritten by the caller for slots no (t,k) points at. */
#include <stdint.h>
#include <string.h>
#include "kernel-math.h"

void athn_moe_combine_fwd_f32(const float *y, const float *gate, const int32_t *slot, float *out,
                              int64_t N, int64_t K, int64_t C) {
#pragma omp parallel for if (N * K * C >= PAR_MIN) schedule(static)
  for (int64_t t = 0; t < N; t++) {
    float *o = out + t * C;
    memset(o, 0, (size_t)C * sizeof(float));
    for (int64_t k = 0; k < K; k++) {
      const int32_t s = slot[t * K + k];
      if (s < 0) continue;
      const float g = gate[t * K + k];
      const float *src = y + (int64_t)s * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) o[c] += g * src[c];
    }
  }
}

void athn_moe_combine_bwd_f32(const float *dout, const float *y, const float *gate, const int32_t *slot,
                              float *dy, float *dgate, int64_t N, int64_t K, int64_t C, int acc) {
#pragma omp parallel for if (N * K * C >= PAR_MIN) schedule(static)
  for (int64_t t = 0; t < N; t++) {
    const float *g = dout + t * C;
    for (int64_t k = 0; k < K; k++) {
      const int32_t s = slot[t * K + k];
      if (s < 0) continue;
      const float w = gate[t * K + k];
      if (dy) {
        float *d = dy + (int64_t)s * C;
        if (acc) {
#pragma omp simd
          for (int64_t c = 0; c < C; c++) d[c] += w * g[c];
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; c++) d[c] = w * g[c];
        }
      }
      if (dgate) {
        const float *src = y + (int64_t)s * C;
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; c++) dot += g[c] * src[c];
        dgate[t * K + k] += dot;
      }
    }
  }
}
