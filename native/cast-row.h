/* One-row float32 <-> 16-bit conversions (kind 1 = bf16, 2 = f16), static inline so that
 * kernels converting a row at a time (attention-lowp.c's softmax, once per score row)
 * pay no call and no OpenMP fork: calling cast.c's 2-D entry points per row went
 * through a nested `omp parallel for if(...)` each time (~1 µs per row, 3-8x the
 * softmax's own work at T = 128-256). Bit-exact with src/core/dtype.ts (round to
 * nearest even, NaN kept quiet / canonicalised), which is the oracle. */
#ifndef ATHN_CAST_ROW_H
#define ATHN_CAST_ROW_H
#include <stdint.h>
#include "kernel-math.h"
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Portable round-to-nearest-even f32 -> f16 (the dtype.ts algorithm, branch-free). */
static inline uint16_t f32_to_f16_bits(float f) {
  const uint32_t u = u_as(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int32_t exp = (int32_t)((u >> 23) & 0xff);
  const uint32_t mant = u & 0x7fffffu;
  const int32_t e = exp - 127 + 15;
  /* normal */
  uint32_t rn = ((uint32_t)e << 10) | (mant >> 13);
  const uint32_t remn = mant & 0x1fffu;
  rn += (remn > 0x1000u || (remn == 0x1000u && (rn & 1u))) ? 1u : 0u;
  /* subnormal: shift in [14, 24] */
  const uint32_t m2 = mant | 0x800000u;
  const int32_t shift = 14 - e;
  const uint32_t sh = (uint32_t)(shift > 24 ? 24 : shift < 14 ? 14 : shift);
  uint32_t rs = m2 >> sh;
  const uint32_t rem = m2 & ((1u << sh) - 1u), half = 1u << (sh - 1u);
  rs += (rem > half || (rem == half && (rs & 1u))) ? 1u : 0u;
  uint32_t r = e >= 0x1f ? 0x7c00u : e <= 0 ? (e < -10 ? 0u : rs) : rn;
  r = exp == 0xff ? (0x7c00u | (mant ? 0x200u : 0u)) : r;
  return (uint16_t)(sign | r);
}

static inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t s = ((uint32_t)h & 0x8000u) << 16, e = ((uint32_t)h >> 10) & 0x1fu, m = (uint32_t)h & 0x3ffu;
  const float sub = (float)m * 5.9604644775390625e-8f;
  const uint32_t subBits = u_as(sub) | s;
  const uint32_t normal = s | ((e + 112u) << 23) | (m << 13);
  const uint32_t special = s | 0x7f800000u | (m << 13);
  return f_as(e == 0 ? subBits : e == 0x1f ? special : normal);
}

/* y[i] = round16(x[i] * scale), i < n. */
static inline void row_f32_to_16(int kind, int64_t n, const float *x, uint16_t *y, float scale) {
  if (kind == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = f32_to_bf16(x[i] * scale);
    return;
  }
  int64_t i = 0;
#if defined(__F16C__)
  /* Hardware RNE conversion (the scalar loop does not vectorise); NaNs canonicalised as in athn_f32_to_f16. */
  const __m256 vs = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i isNan = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
    h = _mm_blendv_epi8(h, _mm_and_si128(h, _mm_set1_epi16((short)0xfe00)), isNan);
    _mm_storeu_si128((__m128i *)(y + i), h);
  }
#endif
  for (; i < n; i++) y[i] = f32_to_f16_bits(x[i] * scale);
}

/* y[i] = float(x[i]), i < n. */
static inline void row_16_to_f32(int kind, int64_t n, const uint16_t *x, float *y) {
  if (kind == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] = bf16_to_f32(x[i]);
    return;
  }
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
#endif
  for (; i < n; i++) y[i] = f16_bits_to_f32(x[i]);
}
#endif
