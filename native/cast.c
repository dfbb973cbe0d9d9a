/* dtype casts (float32 <-> bfloat16 / float16 / float64; contiguous), bit-exact with
 * src/core/dtype.ts, which is the oracle for rounding and NaN handling. */
#include <stdint.h>
#include "kernel-math.h"
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

void athn_f32_to_bf16(int n, const float *x, int xOff, uint16_t *y, int yOff) {
  const float *px = x + xOff;
  uint16_t *py = y + yOff;
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < n; i++) {
    const uint32_t u = u_as(px[i]);
    const uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    const uint16_t quiet = (uint16_t)((u >> 16) | 0x40u);
    py[i] = (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
  }
}

void athn_bf16_to_f32(int n, const uint16_t *x, int xOff, float *y, int yOff) {
  const uint16_t *px = x + xOff;
  float *py = y + yOff;
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < n; i++) py[i] = f_as((uint32_t)px[i] << 16);
}

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

void athn_f32_to_f16(int n, const float *x, int xOff, uint16_t *y, int yOff) {
  const float *px = x + xOff;
  uint16_t *py = y + yOff;
#if defined(__F16C__)
  /* Hardware conversion rounds to nearest even like dtype.ts; NaN payloads are then
   * canonicalised to sign|0x7e00 as dtype.ts does. */
  const int nv = n & ~7;
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < nv; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(px + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m128i absH = _mm_and_si128(h, _mm_set1_epi16(0x7fff));
    const __m128i isNan = _mm_cmpgt_epi16(absH, _mm_set1_epi16(0x7c00));
    h = _mm_blendv_epi8(h, _mm_and_si128(h, _mm_set1_epi16((short)0xfe00)), isNan);
    _mm_storeu_si128((__m128i *)(py + i), h);
  }
  for (int i = nv; i < n; i++) py[i] = f32_to_f16_bits(px[i]);
#else
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < n; i++) py[i] = f32_to_f16_bits(px[i]);
#endif
}

void athn_f16_to_f32(int n, const uint16_t *x, int xOff, float *y, int yOff) {
  const uint16_t *px = x + xOff;
  float *py = y + yOff;
#if defined(__F16C__)
  const int nv = n & ~7;
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < nv; i += 8) _mm256_storeu_ps(py + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(px + i))));
  for (int i = nv; i < n; i++) py[i] = f16_bits_to_f32(px[i]);
#else
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < n; i++) py[i] = f16_bits_to_f32(px[i]);
#endif
}

void athn_f32_to_f64(int n, const float *x, int xOff, double *y, int yOff) {
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < n; i++) y[yOff + i] = (double)x[xOff + i];
}

void athn_f64_to_f32(int n, const double *x, int xOff, float *y, int yOff) {
  #pragma omp parallel for if(n >= 32768) schedule(static)
  for (int i = 0; i < n; i++) y[yOff + i] = (float)x[xOff + i];
}

/* Strided 2-D conversions for mixed-precision GEMM operands (a rows x cols matrix with
 * leading dimension ld, e.g. one head's (T, D) slice of a (B, T, 3C) projection).
 * to16: y = round16(x * scale) (scale carries the fp16 loss scale), kind 1 = bf16,
 * 2 = f16. from16: y = float(x). Oracle: src/backend/reference/lowp.ts. */
void athn_f32_to_16_2d(int kind, int64_t rows, int64_t cols, const float *x, int64_t xOff, int64_t ldx,
                       uint16_t *y, int64_t yOff, int64_t ldy, float scale) {
  #pragma omp parallel for if(rows * cols >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const float *px = x + xOff + r * ldx;
    uint16_t *py = y + yOff + r * ldy;
    if (kind == 1) {
      for (int64_t i = 0; i < cols; i++) {
        const uint32_t u = u_as(px[i] * scale);
        const uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        const uint16_t quiet = (uint16_t)((u >> 16) | 0x40u);
        py[i] = (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
      }
    } else {
      int64_t i = 0;
#if defined(__F16C__)
      /* Hardware RNE conversion (the scalar loop does not vectorise); NaNs canonicalised as in athn_f32_to_f16. */
      const __m256 vs = _mm256_set1_ps(scale);
      for (; i + 8 <= cols; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(px + i), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        const __m128i isNan = _mm_cmpgt_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7fff)), _mm_set1_epi16(0x7c00));
        h = _mm_blendv_epi8(h, _mm_and_si128(h, _mm_set1_epi16((short)0xfe00)), isNan);
        _mm_storeu_si128((__m128i *)(py + i), h);
      }
#endif
      for (; i < cols; i++) py[i] = f32_to_f16_bits(px[i] * scale);
    }
  }
}

void athn_16_to_f32_2d(int kind, int64_t rows, int64_t cols, const uint16_t *x, int64_t xOff, int64_t ldx,
                       float *y, int64_t yOff, int64_t ldy) {
  #pragma omp parallel for if(rows * cols >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    const uint16_t *px = x + xOff + r * ldx;
    float *py = y + yOff + r * ldy;
    if (kind == 1) for (int64_t i = 0; i < cols; i++) py[i] = f_as((uint32_t)px[i] << 16);
    else {
      int64_t i = 0;
#if defined(__F16C__)
      for (; i + 8 <= cols; i += 8) _mm256_storeu_ps(py + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(px + i))));
#endif
      for (; i < cols; i++) py[i] = f16_bits_to_f32(px[i]);
    }
  }
}
