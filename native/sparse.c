/* Embedding-server leaf kernels (src/recsys/native-sparse.ts): gather rows by slot
 * and apply the per-row sparse optimizers, one call per batch instead of one JS loop
 * per row. Rows live in fixed-size chunks (slabs) owned by JS; `tab` holds each
 * chunk's address (filled with athn_sparse_set_ptr), slot s is row (s & mask) of
 * chunk (s >> shift). No allocation, no I/O.
 *
 * The optimizers are bit-exact with applyRow in src/recsys/sparse-optimizer.ts: where JS
 * evaluates in double and rounds to float32 on every store (SGD, Adam), so do we; Adagrad
 * is float32 throughout on both sides. Contraction into FMA (which would skip an
 * intermediate rounding) is turned off. */
#pragma STDC FP_CONTRACT OFF
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

static inline float *row_at(const uint64_t *tab, int shift, int mask, int width, int s) {
  return (float *)(uintptr_t)tab[s >> shift] + (size_t)(s & mask) * (size_t)width;
}

/* Rows are scattered over slabs of hundreds of MB, so nearly every row is a cache
 * miss: fetch the row PF_AHEAD slots ahead while working on this one. */
#ifndef PF_AHEAD
#define PF_AHEAD 8
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

/* Transparent huge pages for row slabs and per-slot arrays: rows are read at random, so
 * with 4 KiB pages nearly every row costs a TLB miss and a page walk besides its cache
 * misses. athn_sparse_huge_skip: bytes from p to the next 2 MiB boundary (the caller
 * over-allocates and starts its array there). athn_sparse_advise_huge: madvise(HUGEPAGE)
 * on the 2 MiB-aligned interior of [p, p+bytes) before its pages are first touched; only
 * advice (THP in "madvise" mode), 1 when given. */
#define HUGE_BYTES ((uintptr_t)2 << 20)
int athn_sparse_huge_skip(const void *p) {
  return (int)((HUGE_BYTES - ((uintptr_t)p & (HUGE_BYTES - 1))) & (HUGE_BYTES - 1));
}
int athn_sparse_advise_huge(const void *p, int64_t bytes) {
  const uintptr_t a = ((uintptr_t)p + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1), e = ((uintptr_t)p + (uintptr_t)bytes) & ~(HUGE_BYTES - 1);
  if (e <= a) return 0;
#ifdef MADV_HUGEPAGE
  return madvise((void *)a, e - a, MADV_HUGEPAGE) == 0;
#else
  return 0;
#endif
}

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

/* One row of float32 Adagrad (shared by the float32 and bf16-gradient kernels). */
static inline void adagrad_row(float *w, float *st, const float *gr, int dim, float lrf, float epsf) {
  for (int j = 0; j < dim; j++) {
    const float gj = gr[j];
    const float a = st[j] + gj * gj;
    st[j] = a;
    w[j] = w[j] - (lrf * gj) / (sqrtf(a) + epsf);
  }
}

/* Adagrad in float32 arithmetic, as PyTorch's float32 Adagrad: each operation rounds to
 * float (no FMA, see the pragma above), which applyRow reproduces with Math.fround. The
 * float32 square root and division are 8 lanes wide; in double they made this kernel
 * compute-bound (about 100 ns of a row's 250 at dim 64). */
void athn_sparse_adagrad(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift,
                         const float *g, const int *gRow, double lr, double eps) {
  const int mask = (1 << shift) - 1;
  const float lrf = (float)lr, epsf = (float)eps;
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
    adagrad_row(w, st, gr, dim, lrf, epsf);
  }
}

/* SGD and Adagrad with the gradient rows as bfloat16 (the push's wire dtype), row u's at
 * g + gRow[u] * dim: the same arithmetic as above on the exactly widened values, without a
 * float32 staging copy of the gradients. */
static inline void widen_bf16(float *dst, const uint16_t *src, int dim) {
  for (int j = 0; j < dim; j++) { const uint32_t x = (uint32_t)src[j] << 16; memcpy(dst + j, &x, 4); }
}

void athn_sparse_sgd_bf16(int nu, int dim, const int *slots, const uint64_t *rows, int shift,
                          const uint16_t *g, const int *gRow, double lr) {
  const int mask = (1 << shift) - 1;
  float gr[dim > 0 ? dim : 1];
  for (int u = 0; u < nu; u++) {
    if (u + PF_AHEAD < nu) prefetch_row(rows, shift, mask, dim, slots[u + PF_AHEAD], 1);
    const int s = slots[u];
    if (s < 0) continue;
    float *w = row_at(rows, shift, mask, dim, s);
    widen_bf16(gr, g + (size_t)gRow[u] * dim, dim);
    for (int j = 0; j < dim; j++) w[j] = (float)((double)w[j] - lr * (double)gr[j]);
  }
}

void athn_sparse_adagrad_bf16(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift,
                              const uint16_t *g, const int *gRow, double lr, double eps) {
  const int mask = (1 << shift) - 1;
  const float lrf = (float)lr, epsf = (float)eps;
  float gr[dim > 0 ? dim : 1];
  for (int u = 0; u < nu; u++) {
    if (u + PF_AHEAD < nu) {
      prefetch_row(rows, shift, mask, dim, slots[u + PF_AHEAD], 1);
      prefetch_row(state, shift, mask, dim, slots[u + PF_AHEAD], 1);
    }
    const int s = slots[u];
    if (s < 0) continue;
    float *w = row_at(rows, shift, mask, dim, s);
    float *st = row_at(state, shift, mask, dim, s);
    widen_bf16(gr, g + (size_t)gRow[u] * dim, dim);
    adagrad_row(w, st, gr, dim, lrf, epsf);
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

/* Per-slot metadata (src/recsys/slot-meta.ts): one 64-byte record per slot, one cache line,
 * so that finding, touching and marking a row costs one random line instead of one per
 * field. int32 fields by index; lastTouch is the double at bytes 32..39. */
#define M_INTS 16
#define M_LO 0
#define M_HI 1
#define M_HASH 2
#define M_PREV 3
#define M_NEXT 4
#define M_STEP 5
#define M_MARK 6
#define M_MPOS 7
#define M_TOUCH 8
#define M_USE 10
#define M_LINK 12 /* double at words 12..13: the LRU link sequence number */
static inline int32_t *rec(int32_t *meta, int s) { return meta + (size_t)s * M_INTS; }
static inline const int32_t *crec(const int32_t *meta, int s) { return meta + (size_t)s * M_INTS; }
static inline void set_touch(int32_t *r, double step) { memcpy(r + M_TOUCH, &step, sizeof step); }
static inline double link_of(const int32_t *r) { double d; memcpy(&d, r + M_LINK, sizeof d); return d; }
static inline void set_link(int32_t *r, double v) { memcpy(r + M_LINK, &v, sizeof v); }
static inline int id_is(const int32_t *r, uint32_t lo, uint32_t hi) { return (uint32_t)r[M_LO] == lo && (uint32_t)r[M_HI] == hi; }

/* IdIndex.find for a batch of (lo, hi) id pairs: slots[i] = slot or -1, hashHi[i] = the
 * hash's hi word (the shard check). Buckets and records are prefetched a batch / a few
 * ids ahead, which is where the time of a one-at-a-time find goes. */
void athn_sparse_find(int n, const uint32_t *ids, const int32_t *table, int mask, const int32_t *meta,
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
      if (sa >= 0) __builtin_prefetch(crec(meta, sa), 0, 3);
    }
    const uint32_t lo = ids[2 * i], hi = ids[2 * i + 1];
    int b = slots[i], r;
    for (;;) {
      const int s = table[b];
      if (s < 0) { r = -1; break; }
      if (id_is(crec(meta, s), lo, hi)) { r = s; break; }
      b = (b + 1) & mask;
    }
    slots[i] = r;
  }
}

/* ---- per-id bookkeeping of a batch (GroupTable.gatherNative / push) ----------------
 * The TypeScript loops in src/recsys/embedding-store.ts (lookupFound, push's reference
 * loop, LruList.moveToHead) are the reference. These kernels run the common case, an id
 * already stored, for consecutive ids in batch order and stop at the first id that needs
 * TypeScript (a miss: admission and insertion; a misrouted id: the error; a found slot that
 * the index may no longer vouch for), returning its index (n when none). TypeScript handles
 * that one id and calls again from the next, so the LRU list, counters and marks see
 * exactly the order of operations of the reference loop. */

#ifndef META_AHEAD
#define META_AHEAD 8
#endif

/* LruList.pushHead; ends = [head, tail], seq[0] = the next link's sequence number. */
static inline void lru_push_head(int32_t *meta, int32_t *ends, double *seq, int s) {
  int32_t *r = rec(meta, s);
  r[M_PREV] = -1;
  r[M_NEXT] = ends[0];
  if (ends[0] >= 0) rec(meta, ends[0])[M_PREV] = s;
  ends[0] = s;
  if (ends[1] < 0) ends[1] = s;
  set_link(r, seq[0]);
  seq[0] += 1;
}

/* LruList.moveToHead. */
static inline void lru_move_to_head(int32_t *meta, int32_t *ends, double *seq, int s) {
  if (ends[0] == s) return;
  int32_t *r = rec(meta, s);
  const int p = r[M_PREV], nx = r[M_NEXT];
  if (p >= 0) rec(meta, p)[M_NEXT] = nx; else if (ends[0] == s) ends[0] = nx;
  if (nx >= 0) rec(meta, nx)[M_PREV] = p; else if (ends[1] == s) ends[1] = p;
  lru_push_head(meta, ends, seq, s);
}

/* GroupTable.touch: last touch, the call's stamp, and LruList.touch (a move to the head
 * only when `window` links happened since the row's own: hot rows keep their place and
 * their neighbours' records are not written). */
static inline void touch_row(int32_t *meta, int32_t *ends, double *seq, double window, int use, double step, int s) {
  int32_t *r = rec(meta, s);
  set_touch(r, step);
  r[M_USE] = use;
  if (seq[0] - link_of(r) >= window) lru_move_to_head(meta, ends, seq, s);
}

/* hashHi % numShards (the shard check, once per id and call): a mask for power-of-two
 * shard counts (1 included) instead of a 32-bit division. */
static inline uint32_t shard_of(uint32_t h, int numShards) {
  const uint32_t n = (uint32_t)numShards;
  return (n & (n - 1)) == 0 ? h & (n - 1) : h % n;
}

/* Slot of stored id i, or -1 when TypeScript must take it (see above). check != 0 once the
 * index changed since `found` was computed: a found slot then counts only if it still
 * holds this id (GroupTable.slotAt). */
static inline int hit_slot(int i, const uint32_t *ids, const int32_t *found, const uint32_t *hashHi, int check,
                           const int32_t *meta, int numShards, int shardIndex, uint32_t groupId) {
  const uint32_t lo = ids[2 * i], hi = ids[2 * i + 1];
  const int s = found[i];
  if (s < 0) return -1;
  if (check && !id_is(crec(meta, s), lo, hi)) return -1;
  if (shard_of(hashHi[i], numShards) != (uint32_t)shardIndex || (hi >> 24) != groupId) return -1;
  return s;
}

/* Slots are random, so each record access is otherwise a cache miss: the record
 * 2*META_AHEAD ids ahead is fetched, and for the one META_AHEAD ahead (whose prev/next
 * have arrived by then) its LRU neighbours' records, which a move to the head writes, when
 * the row will likely move (its link is already `window` links old).
 * The neighbours may change before that id's turn: a prefetch is only a hint. */
static inline void prefetch_meta(int i, int n, const int32_t *found, const int32_t *meta, double seq, double window) {
  if (i + 2 * META_AHEAD < n) {
    const int s = found[i + 2 * META_AHEAD];
    if (s >= 0) __builtin_prefetch(crec(meta, s), 1, 3);
  }
  if (i + META_AHEAD < n) {
    const int s = found[i + META_AHEAD];
    if (s >= 0 && seq - link_of(crec(meta, s)) >= window) {
      const int p = crec(meta, s)[M_PREV], nx = crec(meta, s)[M_NEXT];
      if (p >= 0) __builtin_prefetch(crec(meta, p), 1, 3);
      if (nx >= 0) __builtin_prefetch(crec(meta, nx), 1, 3);
    }
  }
}

/* Push: push's reference loop for each stored id from i0 on. A slot marked with this
 * batch's stamp repeats: uOf[i] = its position, acc[1] = 1 (dup); otherwise it is marked,
 * appended to uniq (position acc[0]++), uOf[i] = that position, firstRow[pos] = i. Touches. */
int athn_sparse_push_hits(int i0, int n, const uint32_t *ids, const int32_t *found, const uint32_t *hashHi, int check,
                          int numShards, int shardIndex, int groupId, double step, int32_t *meta, int32_t *ends,
                          double *seq, double window, int use, int stamp, int32_t *uniq, int32_t *uOf, int32_t *firstRow, int32_t *acc) {
  int nu = acc[0];
  for (int i = i0; i < n; i++) {
    prefetch_meta(i, n, found, meta, seq[0], window);
    const int s = hit_slot(i, ids, found, hashHi, check, meta, numShards, shardIndex, (uint32_t)groupId);
    if (s < 0) { acc[0] = nu; return i; }
    int32_t *r = rec(meta, s);
    if (r[M_MARK] == stamp) { uOf[i] = r[M_MPOS]; acc[1] = 1; }
    else { r[M_MARK] = stamp; r[M_MPOS] = nu; uniq[nu] = s; uOf[i] = nu; firstRow[nu] = i; nu++; }
    touch_row(meta, ends, seq, window, use, step, s);
  }
  acc[0] = nu;
  return n;
}

/* ++rowStep[s] for each update's slot (s < 0: a row evicted in this batch, skipped); returns
 * how many were counted (push's `applied`). */
int athn_sparse_bump_steps(int nu, const int32_t *uniq, int32_t *meta) {
  int applied = 0;
  for (int u = 0; u < nu; u++) {
    if (u + 16 < nu && uniq[u + 16] >= 0) __builtin_prefetch(crec(meta, uniq[u + 16]), 1, 3);
    const int s = uniq[u];
    if (s < 0) continue;
    rec(meta, s)[M_STEP]++;
    applied++;
  }
  return applied;
}

/* athn_sparse_gather straight into bfloat16 (the lookup answer's wire dtype), saving the
 * float32 staging pass: round to nearest even with NaN kept quiet, bit-exact with f32ToBf16
 * in src/core/dtype.ts (and the loop in GroupTable.lookupWire). Rows with slot < 0 are left. */
void athn_sparse_gather_bf16(int n, int dim, const int *slots, const uint64_t *tab, int shift, uint16_t *out) {
  const int mask = (1 << shift) - 1;
  for (int i = 0; i < n; i++) {
    if (i + PF_AHEAD < n) prefetch_row(tab, shift, mask, dim, slots[i + PF_AHEAD], 0);
    const int s = slots[i];
    if (s < 0) continue;
    const uint32_t *src = (const uint32_t *)row_at(tab, shift, mask, dim, s);
    uint16_t *d = out + (size_t)i * dim;
    for (int j = 0; j < dim; j++) {
      const uint32_t x = src[j];
      d[j] = (x & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((x >> 16) | 0x40) : (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    }
  }
}

/* ---- lookups that create rows in C (GroupTable.gatherNative) ----------------------
 * With a large vocabulary most ids of a batch are first seen; stopping at each would cost
 * one TypeScript round trip (and one FFI call) per new row. This kernel runs the reference
 * loop (GroupTable.lookupFound + insertNew) in C for stored ids and for the common miss: an admitted id (admitProbability 1) placed in a never-used slot that already
 * has metadata and a slab (slot < slotLimit), while the index stays at most half full
 * (count < countLimit). Anything else (a recycled or evicted slot, growth, a rehash,
 * admission draws, a misrouted id) returns its index to TypeScript, as before. A
 * read-only miss (touch == 0) is answered -1 here (the caller writes the init vector).
 * acc (in/out): [0] hits, [1] inserts, [2] read-only misses, [3] nextSlot, [4] count. */

/* GroupTable.initRow's mulberry32 stream, bit-exact: JS computes in double, rounds once on the store. */
static void init_row(float *out, int dim, int uniform, double scale, uint32_t hi, uint32_t lo) {
  if (!uniform) { for (int j = 0; j < dim; j++) out[j] = 0.0f; return; }
  const uint64_t h = fmix64(((uint64_t)hi << 32) | lo);
  uint32_t x = (uint32_t)h ^ (uint32_t)(h >> 32);
  for (int j = 0; j < dim; j++) {
    x += 0x6d2b79f5u;
    uint32_t t = (x ^ (x >> 15)) * (1u | x);
    t = (t + (t ^ (t >> 7)) * (61u | t)) ^ t;
    const double u = (double)(t ^ (t >> 14)) / 4294967296.0;
    out[j] = (float)((2.0 * u - 1.0) * scale);
  }
}

int athn_sparse_lookup_fill(int i0, int n, const uint32_t *ids, const int32_t *found, const uint32_t *hashHi, int check,
                            int32_t *meta, int32_t *table, int mask,
                            int numShards, int shardIndex, int groupId, int touch, double step,
                            int32_t *ends, double *seq, double window, int use, int32_t *slots,
                            int slotLimit, int countLimit, const uint64_t *rowTab, const uint64_t *stateTab, int shift,
                            int dim, int stW, int initUniform, double initScale, uint32_t initHi, uint32_t initLo,
                            double stateInit, int32_t *acc) {
  int hits = 0, inserts = 0, roMisses = 0, nextSlot = acc[3], count = acc[4], ret = n;
  const int cmask = (1 << shift) - 1;
  const float st0 = (float)stateInit;
  for (int i = i0; i < n; i++) {
    if (touch) prefetch_meta(i, n, found, meta, seq[0], window);
    const uint32_t lo = ids[2 * i], hi = ids[2 * i + 1];
    if (shard_of(hashHi[i], numShards) != (uint32_t)shardIndex || (hi >> 24) != (uint32_t)groupId) { ret = i; break; }
    int s = found[i];
    if (s >= 0 && check && !id_is(crec(meta, s), lo, hi)) { ret = i; break; }
    if (s < 0 && check) {
      /* Inserted since the batch find (a repeated id, or by TypeScript): ask the index again. */
      const uint64_t h = fmix64(((uint64_t)hi << 32) | lo);
      for (int b = (int)((uint32_t)h & (uint32_t)mask);; b = (b + 1) & mask) {
        const int t = table[b];
        if (t < 0) break;
        if (id_is(crec(meta, t), lo, hi)) { s = t; break; }
      }
    }
    if (s >= 0) {
      hits++;
      slots[i] = s;
      if (touch) touch_row(meta, ends, seq, window, use, step, s);
      continue;
    }
    if (!touch) { roMisses++; slots[i] = -1; continue; }
    if (nextSlot >= slotLimit || count >= countLimit) { ret = i; break; }
    /* insertNew: a fresh slot, the index, the seeded row, the initial state, the LRU head. */
    s = nextSlot++;
    count++;
    inserts++;
    const uint64_t h = fmix64(((uint64_t)hi << 32) | lo);
    int32_t *r = rec(meta, s);
    r[M_LO] = (int32_t)lo; r[M_HI] = (int32_t)hi; r[M_HASH] = (int32_t)(uint32_t)h;
    int b = (int)((uint32_t)h & (uint32_t)mask);
    while (table[b] >= 0) b = (b + 1) & mask;
    table[b] = s;
    init_row(row_at(rowTab, shift, cmask, dim, s), dim, initUniform, initScale, hi ^ initHi, lo ^ initLo);
    if (stW > 0) { float *st = row_at(stateTab, shift, cmask, stW, s); for (int j = 0; j < stW; j++) st[j] = st0; }
    r[M_STEP] = 0;
    lru_push_head(meta, ends, seq, s);
    set_touch(r, step); /* touch_row after the push: the head does not move */
    r[M_USE] = use;
    check = 1; /* the index changed: later misses are looked up again */
    slots[i] = s;
  }
  acc[0] += hits; acc[1] += inserts; acc[2] += roMisses; acc[3] = nextSlot; acc[4] = count;
  return ret;
}
