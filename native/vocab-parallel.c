/* The vocab-parallel cross-entropy's three row loops (src/ops/group.ts): each rank holds
 * logits (N, Vl) for its slice [vocabStart, vocabStart + Vl) of the vocabulary. Between
 * them the op all-reduces the row maxima (max) and the row sums (sum) over the group, so
 * the loops cannot fuse across ranks; each is one pass over the logits. The TypeScript
 * references (src/backend/reference/vocab-parallel.ts) are the fallback and the oracle. */
/* gcc keeps a loop with fast_expf's clamps scalar unless floating-point operations may be
 * assumed not to trap; that assumption changes no result (NaN and Inf propagate as
 * before), and with it the exp loops vectorise (8 lanes under AVX2): on the Zen 3, 13-20x
 * the TypeScript loops instead of 5x. Only this file: the same flag for every kernel file
 * makes cross-entropy and softmax 4-5x faster too, but moves pp=2 × dp=2's rounding past
 * its parity test's tolerance (notes/ptpz.md). */
#pragma GCC optimize("no-trapping-math")
#include "kernel-math.h"

/* max[i] = max_j z[i, j] */
void athn_vpce_row_max_f32(const float *z, int64_t N, int64_t Vl, float *max) {
#pragma omp parallel for if (N * Vl >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < N; i++) max[i] = row_max(z + i * Vl, Vl);
}

/* sums[i] = sum_j exp(z[i, j] - max[i]); sums[N + i] = z[i, t_i - vocabStart] where this
 * rank holds row i's target (left as it is elsewhere: the caller zeroed it). */
void athn_vpce_sum_exp_f32(const float *z, int64_t N, int64_t Vl, const float *max, const int32_t *t,
                           int32_t vocab_start, int32_t ignore, float *sums) {
#pragma omp parallel for if (N * Vl >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const float *zr = z + i * Vl;
    const float m = max[i];
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < Vl; j++) s += fast_expf(zr[j] - m);
    sums[i] = s;
    const int64_t local = (int64_t)t[i] - vocab_start;
    if (t[i] != ignore && local >= 0 && local < Vl) sums[N + i] = zr[local];
  }
}

/* g[i, j] (+)= scale * exp(z[i, j] - max[i]) / sum[i], minus scale at the target held
 * here; rows whose target is `ignore` get no gradient (zeroed when fresh). */
void athn_vpce_grad_f32(const float *z, float *g, int64_t N, int64_t Vl, const float *max, const float *sum,
                        const int32_t *t, int32_t vocab_start, int32_t ignore, float scale, int fresh) {
#pragma omp parallel for if (N * Vl >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < N; i++) {
    const float *zr = z + i * Vl;
    float *gr = g + i * Vl;
    if (t[i] == ignore) {
      if (fresh) memset(gr, 0, (size_t)Vl * sizeof(float));
      continue;
    }
    const float m = max[i], k = scale / sum[i];
    if (fresh) {
#pragma omp simd
      for (int64_t j = 0; j < Vl; j++) gr[j] = k * fast_expf(zr[j] - m);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < Vl; j++) gr[j] += k * fast_expf(zr[j] - m);
    }
    const int64_t local = (int64_t)t[i] - vocab_start;
    if (local >= 0 && local < Vl) gr[local] -= scale;
  }
}
