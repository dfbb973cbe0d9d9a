/* Embedding-server leaf kernels (src/recsys/native-sparse.ts): gather rows by slot
 * and apply the per-row sparse optimizers, one call per batch instead of one JS loop
 * per row. Rows live in fixed-size chunks (slabs) owned by JS; `tab` holds each
 * chunk's address (filled with athn_sparse_set_ptr), slot s is row (s & mask) of
 * chunk (s >> shift). No allocation, no I/O.
 *
 * The optimizers are bit-exact with applyRow in src/recsys/sparse-optimizer.ts: JS
 * evaluates in double and rounds to float32 on every store, so do we, and
 * contraction into FMA (which would skip an intermediate rounding) is turned off. */
#pragma STDC FP_CONTRACT OFF
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float *row_at(const uint64_t *tab, int shift, int mask, int width, int s) {
  return (float *)(uintptr_t)tab[s >> shift] + (size_t)(s & mask) * (size_t)width;
}

/* Rows are scattered over slabs of hundreds of MB, so nearly every row is a cache
 * miss: fetch the row PF_AHEAD slots ahead while working on this one. */
#ifndef PF_AHEAD
#define PF_AHEAD 4
#endif
#ifndef FIND_AHEAD
#define FIND_AHEAD 16
#endif
static inline void prefetch_row(const uint64_t *tab, int shift, int mask, int width, int s, int write) {
  if (s < 0) return;
  const char *p = (const char *)row_at(tab, shift, mask, width, s);
  const size_t bytes = (size_t)width * sizeof(float);
  for (size_t o = 0; o < bytes; o += 64) {
    if (write) __builtin_prefetch(p + o, 1, 3); else __builtin_prefetch(p + o, 0, 3);
  }
}

void athn_sparse_set_ptr(uint64_t *tab, int k, const void *p) { tab[k] = (uint64_t)(uintptr_t)p; }

/* out row i = row of slots[i] (dim floats); rows with slot < 0 are left untouched. */
void athn_sparse_gather(int n, int dim, const int *slots, const uint64_t *tab, int shift, float *out) {
  const int mask = (1 << shift) - 1;
  for (int i = 0; i < n; i++) {
    if (i + PF_AHEAD < n) prefetch_row(tab, shift, mask, dim, slots[i + PF_AHEAD], 0);
    const int s = slots[i];
    if (s < 0) continue;
    memcpy(out + (size_t)i * dim, row_at(tab, shift, mask, dim, s), (size_t)dim * sizeof(float));
  }
}

/* Sums duplicate gradient rows in arrival order: g row i goes to sum row uOf[i] (skipped
 * when < 0), copied when i is that row's first occurrence (first[u] == i), added otherwise. */
void athn_sparse_accum(int n, int dim, const int *uOf, const int *first, const float *g, float *sum) {
  for (int i = 0; i < n; i++) {
    const int u = uOf[i];
    if (u < 0) continue;
    float *d = sum + (size_t)u * dim;
    const float *x = g + (size_t)i * dim;
    if (first[u] == i) memcpy(d, x, (size_t)dim * sizeof(float));
    else for (int j = 0; j < dim; j++) d[j] += x[j];
  }
}

/* Gradient row of update u: g row gRow[u] (or row u when gRow is NULL). Slots < 0 are skipped. */
static inline const float *grad_of(const float *g, const int *gRow, int u, int dim) {
  return g + (size_t)(gRow ? gRow[u] : u) * dim;
}

void athn_sparse_sgd(int nu, int dim, const int *slots, const uint64_t *rows, int shift,
                     const float *g, const int *gRow, double lr) {
  const int mask = (1 << shift) - 1;
  for (int u = 0; u < nu; u++) {
    if (u + PF_AHEAD < nu) prefetch_row(rows, shift, mask, dim, slots[u + PF_AHEAD], 1);
    const int s = slots[u];
    if (s < 0) continue;
    float *w = row_at(rows, shift, mask, dim, s);
    const float *gr = grad_of(g, gRow, u, dim);
    for (int j = 0; j < dim; j++) w[j] = (float)((double)w[j] - lr * (double)gr[j]);
  }
}

void athn_sparse_adagrad(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift,
                         const float *g, const int *gRow, double lr, double eps) {
  const int mask = (1 << shift) - 1;
  for (int u = 0; u < nu; u++) {
    if (u + PF_AHEAD < nu) {
      prefetch_row(rows, shift, mask, dim, slots[u + PF_AHEAD], 1);
      prefetch_row(state, shift, mask, dim, slots[u + PF_AHEAD], 1);
    }
    const int s = slots[u];
    if (s < 0) continue;
    float *w = row_at(rows, shift, mask, dim, s);
    float *st = row_at(state, shift, mask, dim, s);
    const float *gr = grad_of(g, gRow, u, dim);
    for (int j = 0; j < dim; j++) {
      const double gj = (double)gr[j];
      const double a = (double)st[j] + gj * gj;
      st[j] = (float)a;
      w[j] = (float)((double)w[j] - (lr * gj) / (sqrt(a) + eps));
    }
  }
}

/* Lazy Adam; stepSize[u] = lr / (1 - beta1^t) and bc2Sqrt[u] = sqrt(1 - beta2^t) come from
 * the caller (JS Math.pow), so the bias corrections match the TypeScript path exactly. */
void athn_sparse_adam(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift,
                      const float *g, const int *gRow, const double *stepSize, const double *bc2Sqrt,
                      double b1, double b2, double eps) {
  const int mask = (1 << shift) - 1;
  const double omb1 = 1 - b1, omb2 = 1 - b2;
  for (int u = 0; u < nu; u++) {
    if (u + PF_AHEAD < nu) {
      prefetch_row(rows, shift, mask, dim, slots[u + PF_AHEAD], 1);
      prefetch_row(state, shift, mask, 2 * dim, slots[u + PF_AHEAD], 1);
    }
    const int s = slots[u];
    if (s < 0) continue;
    float *w = row_at(rows, shift, mask, dim, s);
    float *mr = row_at(state, shift, mask, 2 * dim, s);
    float *vr = mr + dim;
    const float *gr = grad_of(g, gRow, u, dim);
    const double ss = stepSize[u], bc = bc2Sqrt[u];
    for (int j = 0; j < dim; j++) {
      const double gj = (double)gr[j];
      const double m = b1 * (double)mr[j] + omb1 * gj;
      const double v = b2 * (double)vr[j] + omb2 * gj * gj;
      const float mf = (float)m, vf = (float)v;
      mr[j] = mf;
      vr[j] = vf;
      w[j] = (float)((double)w[j] - (ss * (double)mf) / (sqrt((double)vf) / bc + eps));
    }
  }
}

/* MurmurHash3's 64-bit finalizer: fmix64 in src/recsys/embedding-hash.ts. */
static inline uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

/* IdIndex.find for a batch of (lo, hi) id pairs: slots[i] = slot or -1, hashHi[i] = the
 * hash's hi word (the shard check). Buckets and id words are prefetched a batch / a few
 * ids ahead, which is where the time of a one-at-a-time find goes. */
void athn_sparse_find(int n, const uint32_t *ids, const int32_t *table, int mask, const uint32_t *idLo, const uint32_t *idHi,
                      int32_t *slots, uint32_t *hashHi) {
  for (int i = 0; i < n; i++) {
    const uint64_t h = fmix64(((uint64_t)ids[2 * i + 1] << 32) | ids[2 * i]);
    hashHi[i] = (uint32_t)(h >> 32);
    const int b = (int)((uint32_t)h & (uint32_t)mask);
    slots[i] = b;
    __builtin_prefetch(table + b, 0, 3);
  }
  for (int i = 0; i < n; i++) {
    if (i + FIND_AHEAD < n) {
      const int sa = table[slots[i + FIND_AHEAD]];
      if (sa >= 0) { __builtin_prefetch(idLo + sa, 0, 3); __builtin_prefetch(idHi + sa, 0, 3); }
    }
    const uint32_t lo = ids[2 * i], hi = ids[2 * i + 1];
    int b = slots[i], r;
    for (;;) {
      const int s = table[b];
      if (s < 0) { r = -1; break; }
      if (idLo[s] == lo && idHi[s] == hi) { r = s; break; }
      b = (b + 1) & mask;
    }
    slots[i] = r;
  }
}
