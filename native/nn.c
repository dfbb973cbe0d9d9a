/* Neural-network kernels (float32): softmax, log-softmax, cross-entropy, LayerNorm,
 * RMSNorm, embedding, dropout and the bias gradient (the attention softmax pieces are
 * in attention.c). GEMM is not here: it is OpenBLAS's job (src/backend/blas.ts).
 *
 * Conventions shared with src/backend/reference/nn.ts (the oracle):
 *  - rows are contiguous, `ld` (when present) is the distance between row starts;
 *  - every backward kernel ACCUMULATES into its gradient outputs (dx += ...), so a
 *    tensor used twice needs no temporary; a NULL gradient pointer means "not needed";
 *    an `acc` flag of 0 means the input-gradient buffer was never written (fresh from
 *    the pool) and is overwritten instead: that saves zero-filling it and a read pass;
 *  - row loops run under OpenMP only above 32768 elements, so small calls never pay
 *    a fork/join; per-thread partial sums (LayerNorm dweight/dbias) are reduced in
 *    thread order, so results are deterministic for a given thread count.
 * exp is fast_expf (kernel-math.h), a polynomial written so that gcc vectorizes it:
 * libm's expf is a scalar call and would make these kernels compute-bound. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "kernel-math.h"

/* y[j] = exp(x[j] - m), returns the sum (y may alias x). */
static inline float exp_shift_sum(const float *x, float *y, int64_t n, float m) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) {
    float e = fast_expf(x[j] - m);
    y[j] = e;
    s += e;
  }
  return s;
}

static inline float exp_shift_sum_only(const float *x, int64_t n, float m) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) s += fast_expf(x[j] - m);
  return s;
}

/* ---------------------------------------------------------------- softmax */

void athn_softmax_fwd_f32(const float *x, float *y, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = x + i * cols;
    float *yr = y + i * cols;
    float m = row_max(xr, cols);
    float inv = 1.0f / exp_shift_sum(xr, yr, cols, m);
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
  }
}

void athn_log_softmax_fwd_f32(const float *x, float *y, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = x + i * cols;
    float *yr = y + i * cols;
    float m = row_max(xr, cols);
    float lse = m + logf(exp_shift_sum_only(xr, cols, m));
#pragma omp simd
    for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] - lse;
  }
}

/* dx += y * (dy - sum(dy * y))   (acc = 0: dx = ..., for a gradient buffer not yet written) */
void athn_softmax_bwd_f32(const float *y, const float *dy, float *dx, int64_t rows, int64_t cols, int acc) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *yr = y + i * cols, *gr = dy + i * cols;
    float *dr = dx + i * cols;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) s += yr[j] * gr[j];
    if (acc) {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) dr[j] += yr[j] * (gr[j] - s);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) dr[j] = yr[j] * (gr[j] - s);
    }
  }
}

/* dx += dy - exp(y) * sum(dy)   (y = log-softmax output; acc as above) */
void athn_log_softmax_bwd_f32(const float *y, const float *dy, float *dx, int64_t rows, int64_t cols, int acc) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *yr = y + i * cols, *gr = dy + i * cols;
    float *dr = dx + i * cols;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; j++) s += gr[j];
    if (acc) {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) dr[j] += gr[j] - fast_expf(yr[j]) * s;
    } else {
#pragma omp simd
      for (int64_t j = 0; j < cols; j++) dr[j] = gr[j] - fast_expf(yr[j]) * s;
    }
  }
}

/* ---------------------------------------------------------- cross-entropy */

/* Per row: lse[i] = logsumexp(logits[i]); loss_i = lse - logits[i][t]. Rows whose target
 * is ignore_index contribute nothing (their lse is still written). Returns the sum of
 * the row losses (the caller divides by the count of counted rows). Targets have been
 * range-checked by the caller. */
double athn_cross_entropy_fwd_f32(const float *logits, const int32_t *targets, float *lse,
                                  int64_t rows, int64_t V, int32_t ignore_index) {
  double total = 0.0;
#pragma omp parallel for if (rows * V >= PAR_MIN) schedule(static) reduction(+ : total)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = logits + i * V;
    float m = row_max(xr, V);
    float l = m + logf(exp_shift_sum_only(xr, V, m));
    lse[i] = l;
    int32_t t = targets[i];
    if (t != ignore_index) total += (double)(l - xr[t]);
  }
  return total;
}

/* dlogits[i] += scale * (softmax(logits[i]) - onehot(t_i)) for counted rows
 * (acc = 0: written instead, ignored rows become 0). */
void athn_cross_entropy_bwd_f32(const float *logits, const int32_t *targets, const float *lse,
                                float *dlogits, int64_t rows, int64_t V, int32_t ignore_index, float scale, int acc) {
#pragma omp parallel for if (rows * V >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    int32_t t = targets[i];
    const float *xr = logits + i * V;
    float *dr = dlogits + i * V;
    if (t == ignore_index) {
      if (!acc) memset(dr, 0, (size_t)V * sizeof(float));
      continue;
    }
    float l = lse[i];
    if (acc) {
#pragma omp simd
      for (int64_t j = 0; j < V; j++) dr[j] += scale * fast_expf(xr[j] - l);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < V; j++) dr[j] = scale * fast_expf(xr[j] - l);
    }
    dr[t] -= scale;
  }
}

/* -------------------------------------------------------------- LayerNorm */

void athn_layernorm_fwd_f32(const float *x, const float *w, const float *b, float *y, float *mean,
                            float *rstd, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for if (rows * C >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = x + i * C;
    float *yr = y + i * C;
    float mu, rs;
    layernorm_row_stats(xr, C, eps, &mu, &rs);
    if (b) {
#pragma omp simd
      for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mu) * rs * w[j] + b[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < C; j++) yr[j] = (xr[j] - mu) * rs * w[j];
    }
    if (mean) mean[i] = mu;
    rstd[i] = rs;
  }
}

static int n_threads_for(int64_t work) {
#ifdef _OPENMP
  return work >= PAR_MIN ? omp_get_max_threads() : 1;
#else
  (void)work;
  return 1;
#endif
}

/* The calling thread's contiguous share [*lo, *hi) of n items, inside a parallel region.
 * Fixed shares (not an omp for) let a thread keep its own partial sums, or own a column
 * range outright, which keeps reductions deterministic. */
static inline void thread_share(int64_t n, int64_t *lo, int64_t *hi) {
  int tid = 0, T = 1;
#ifdef _OPENMP
  tid = omp_get_thread_num();
  T = omp_get_num_threads();
#endif
  *lo = n * tid / T;
  *hi = n * (tid + 1) / T;
}

/* Backward of LayerNorm (mean != NULL) and RMSNorm (mean == NULL, no centring):
 *   g = dy * w, xhat = (x - mu) * rstd
 *   dx += rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))      (RMSNorm: no mean_j(g) term)
 *   dw += sum_rows dy * xhat ; db += sum_rows dy.   Any of dx, dw, db may be NULL.
 * Per row: sweep 1 reads x and dy once and forms both row sums (rstd is factored out
 * of sum g * xhat); sweep 2, while the row is still in L1, writes dx and adds dy * xhat
 * and dy to this thread's dweight/dbias partials. Rows stay one at a time on purpose:
 * blocking 4 rows per sweep (fewer partial-buffer loads/stores, more independent sums)
 * was ~5-10% faster with everything in L2 but 15-30% slower (best runs) from L3 at
 * 2048x512: four short interleaved row streams defeat the hardware prefetcher.
 * Each thread owns a contiguous share of rows and a private, cache-line aligned partial
 * buffer; partials are reduced in thread order, so results are deterministic for a
 * given thread count. CENTRE / ACC / DX / W are compile-time constants at every call
 * (always_inline), so each combination gets its own branch-free vectorised loops. */
#define NORM_INLINE static inline __attribute__((always_inline))

NORM_INLINE void norm_bwd_row(const float *restrict dy, const float *restrict x, const uint16_t *restrict xh,
                              const float *restrict w, const float *mean, const float *rstd, float *restrict dx,
                              float *restrict pw, float *restrict pb, int64_t i, int64_t C,
                              const int CENTRE, const int ACC, const int DX, const int W, const int XH) {
  /* XH: x is the bf16 copy saved for backward (xh), widened as it is read. */
  const float *g0 = dy + i * C, *x0 = XH ? NULL : x + i * C;
  const uint16_t *xh0 = XH ? xh + i * C : NULL;
  const float m0 = CENTRE ? mean[i] : 0.f, r0 = rstd[i];
  float mg0 = 0.f, mx0 = 0.f;
  if (DX) {
    float sg0 = 0.f, sx0 = 0.f;
#pragma omp simd reduction(+ : sg0, sx0)
    for (int64_t j = 0; j < C; j++) {
      const float a0 = g0[j] * w[j];
      if (CENTRE) sg0 += a0;
      sx0 += a0 * ((XH ? bf16_to_f32(xh0[j]) : x0[j]) - m0);
    }
    const float inv = 1.0f / (float)C;
    mg0 = sg0 * inv;
    mx0 = sx0 * r0 * inv;
  }
  float *d0 = DX ? dx + i * C : NULL;
#pragma omp simd
  for (int64_t j = 0; j < C; j++) {
    const float e0 = g0[j], h0 = ((XH ? bf16_to_f32(xh0[j]) : x0[j]) - m0) * r0;
    if (DX) {
      const float v0 = r0 * (e0 * w[j] - mg0 - h0 * mx0);
      if (ACC) d0[j] += v0;
      else d0[j] = v0;
    }
    if (W) {
      pw[j] += e0 * h0;
      if (CENTRE) pb[j] += e0;
    }
  }
}

/* Rows [r0, r1) of one thread. */
NORM_INLINE void norm_bwd_share(const float *dy, const float *x, const uint16_t *xh, const float *w, const float *mean,
                                const float *rstd, float *dx, float *pw, float *pb, int64_t r0, int64_t r1, int64_t C,
                                const int CENTRE, const int ACC, const int DX, const int W) {
  if (xh)
    for (int64_t i = r0; i < r1; i++) norm_bwd_row(dy, x, xh, w, mean, rstd, dx, pw, pb, i, C, CENTRE, ACC, DX, W, 1);
  else
    for (int64_t i = r0; i < r1; i++) norm_bwd_row(dy, x, xh, w, mean, rstd, dx, pw, pb, i, C, CENTRE, ACC, DX, W, 0);
}

#define NORM_SHARE(CE, AC, DXF, WF) norm_bwd_share(dy, x, xh, w, mean, rstd, dx, pw, pb, r0, r1, C, CE, AC, DXF, WF)

/* x (fp32) or xh (its bf16 copy saved for backward): exactly one is non-NULL. */
static void norm_bwd(const float *dy, const float *x, const uint16_t *xh, const float *w, const float *mean, const float *rstd,
                     float *dx, float *dw, float *db, int64_t rows, int64_t C, int acc) {
  int need_w = dw != NULL || db != NULL;
  if (!dx && !need_w) return;
  if (!mean) db = NULL; /* RMSNorm has no bias */
  int nt = n_threads_for(rows * C);
  /* per thread: pw[C] then pb[C], each padded to whole cache lines */
  const int64_t Cp = (C + 15) & ~(int64_t)15;
  float *part = NULL;
  if (need_w) {
    size_t bytes = (size_t)nt * 2 * (size_t)Cp * sizeof(float);
    part = (float *)aligned_alloc(64, bytes);
    if (!part) nt = 1, bytes = 2 * (size_t)Cp * sizeof(float), part = (float *)aligned_alloc(64, bytes);
    if (!part) need_w = 0; /* out of memory even for 2*C floats: dx only, as before */
    memset(part, 0, bytes);
  }
  const int centre = mean != NULL, has_dx = dx != NULL;
  if (!has_dx && !need_w) return;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    int64_t r0, r1;
    thread_share(rows, &r0, &r1);
    float *pw = part ? part + (size_t)tid * 2 * Cp : NULL;
    float *pb = pw ? pw + Cp : NULL;
    if (centre) {
      if (has_dx && need_w) { if (acc) NORM_SHARE(1, 1, 1, 1); else NORM_SHARE(1, 0, 1, 1); }
      else if (has_dx) { if (acc) NORM_SHARE(1, 1, 1, 0); else NORM_SHARE(1, 0, 1, 0); }
      else NORM_SHARE(1, 0, 0, 1);
    } else {
      if (has_dx && need_w) { if (acc) NORM_SHARE(0, 1, 1, 1); else NORM_SHARE(0, 0, 1, 1); }
      else if (has_dx) { if (acc) NORM_SHARE(0, 1, 1, 0); else NORM_SHARE(0, 0, 1, 0); }
      else NORM_SHARE(0, 0, 0, 1);
    }
  }
  if (part) {
    for (int t = 0; t < nt; t++) {
      const float *pw = part + (size_t)t * 2 * Cp, *pb = pw + Cp;
      if (dw)
        for (int64_t j = 0; j < C; j++) dw[j] += pw[j];
      if (db)
        for (int64_t j = 0; j < C; j++) db[j] += pb[j];
    }
    free(part);
  }
}
#undef NORM_SHARE

void athn_layernorm_bwd_f32(const float *dy, const float *x, const float *w, const float *mean, const float *rstd,
                            float *dx, float *dw, float *db, int64_t rows, int64_t C, int acc) {
  norm_bwd(dy, x, NULL, w, mean, rstd, dx, dw, db, rows, C, acc);
}

/* LayerNorm backward reading the bf16 copy of x saved by athn_layernorm_fwd_bf16pack
 * (nn-lowp.c); fp32 math, the same loops as the fp32 kernel. */
void athn_layernorm_bwd_bf16in(const float *dy, const uint16_t *xh, const float *w, const float *mean, const float *rstd,
                               float *dx, float *dw, float *db, int64_t rows, int64_t C, int acc) {
  norm_bwd(dy, NULL, xh, w, mean, rstd, dx, dw, db, rows, C, acc);
}

/* ---------------------------------------------------------------- RMSNorm */

void athn_rmsnorm_fwd_f32(const float *x, const float *w, float *y, float *rstd, int64_t rows, int64_t C, float eps) {
#pragma omp parallel for if (rows * C >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) {
    const float *xr = x + i * C;
    float *yr = y + i * C;
    float v = 0.f;
#pragma omp simd reduction(+ : v)
    for (int64_t j = 0; j < C; j++) v += xr[j] * xr[j];
    float rs = 1.0f / sqrtf(v / (float)C + eps);
#pragma omp simd
    for (int64_t j = 0; j < C; j++) yr[j] = xr[j] * rs * w[j];
    rstd[i] = rs;
  }
}

void athn_rmsnorm_bwd_f32(const float *dy, const float *x, const float *w, const float *rstd,
                          float *dx, float *dw, int64_t rows, int64_t C, int acc) {
  norm_bwd(dy, x, NULL, w, NULL, rstd, dx, dw, NULL, rows, C, acc);
}

/* -------------------------------------------------------------- embedding */

/* out[i] = w[idx[i]] (rows of C; w rows ldw apart). Indices were range-checked. */
void athn_embedding_fwd_f32(const float *w, int64_t ldw, const int32_t *idx, float *out, int64_t n, int64_t C) {
#pragma omp parallel for if (n * C >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) memcpy(out + i * C, w + (int64_t)idx[i] * ldw, (size_t)C * sizeof(float));
}

/* dw[idx[i]] += dout[i]. Threads split the columns, so duplicate ids never race and
 * every row is summed in index order (deterministic). */
void athn_embedding_bwd_f32(const float *dout, const int32_t *idx, float *dw, int64_t n, int64_t C) {
  int nt = n_threads_for(n * C);
  if (C < 64) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int64_t c0, c1;
    thread_share(C, &c0, &c1);
    for (int64_t i = 0; i < n; i++) {
      const float *g = dout + i * C;
      float *d = dw + (int64_t)idx[i] * C;
#pragma omp simd
      for (int64_t j = c0; j < c1; j++) d[j] += g[j];
    }
  }
}

/* ---------------------------------------------------------------- dropout */

/* Counter-based hash (lowbias32): element i is kept when hash(seed, i) >= threshold,
 * threshold = p * 2^32. The reference computes the same bits, so mask generation is
 * identical in both backends and independent of the thread count. */
static inline uint32_t drop_hash(uint32_t seed, uint32_t i) {
  uint32_t x = (i * 0x9E3779B9u) ^ seed;
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

/* y = x * keep * scale; mask gets one bit per element (bit i%32 of word i/32). */
void athn_dropout_fwd_f32(const float *x, float *y, uint32_t *mask, int64_t n, uint32_t seed, double threshold, float scale) {
  int64_t words = (n + 31) / 32;
#pragma omp parallel for if (n >= PAR_MIN) schedule(static)
  for (int64_t wi = 0; wi < words; wi++) {
    uint32_t bits = 0;
    int64_t base = wi * 32, end = base + 32 < n ? base + 32 : n;
    for (int64_t i = base; i < end; i++) {
      uint32_t keep = (double)drop_hash(seed, (uint32_t)i) >= threshold;
      bits |= keep << (i - base);
      y[i] = keep ? x[i] * scale : 0.f;
    }
    mask[wi] = bits;
  }
}

/* dx += dy * keep * scale   (acc = 0: dx = ...) */
void athn_dropout_bwd_f32(const float *dy, const uint32_t *mask, float *dx, int64_t n, float scale, int acc) {
  int64_t words = (n + 31) / 32;
#pragma omp parallel for if (n >= PAR_MIN) schedule(static)
  for (int64_t wi = 0; wi < words; wi++) {
    uint32_t bits = mask[wi];
    int64_t base = wi * 32, end = base + 32 < n ? base + 32 : n;
    if (acc) {
      for (int64_t i = base; i < end; i++)
        if ((bits >> (i - base)) & 1u) dx[i] += dy[i] * scale;
    } else {
      for (int64_t i = base; i < end; i++) dx[i] = ((bits >> (i - base)) & 1u) ? dy[i] * scale : 0.f;
    }
  }
}

/* ------------------------------------------------------------ bias / misc */

/* db[j] += sum_i dy[i*ld + j]. Threads split the columns (no reduction race). */
void athn_bias_grad_f32(const float *dy, float *db, int64_t rows, int64_t cols, int64_t ld) {
  int nt = n_threads_for(rows * cols);
  if (cols < 64) nt = 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int64_t c0, c1;
    thread_share(cols, &c0, &c1);
    for (int64_t i = 0; i < rows; i++) {
      const float *g = dy + i * ld;
#pragma omp simd
      for (int64_t j = c0; j < c1; j++) db[j] += g[j];
    }
  }
}

/* Each of rows rows (ld apart) of y = bias: the first step of y = x W^T + b before a
 * GEMM with beta = 1. */
void athn_fill_rows_f32(float *y, const float *bias, int64_t rows, int64_t cols, int64_t ld) {
#pragma omp parallel for if (rows * cols >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < rows; i++) memcpy(y + i * ld, bias, (size_t)cols * sizeof(float));
}
