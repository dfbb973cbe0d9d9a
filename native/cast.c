/* dtype casts (float32 <-> bfloat16 / float16 / float64; contiguous), bit-exact with
 * src/core/dtype.ts, which is the oracle for rounding and NaN handling. */
#include <stdint.h>
#include "kernel-math.h"
#include "cast-row.h"

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
  for (int64_t r = 0; r < rows; r++) row_f32_to_16(kind, cols, x + xOff + r * ldx, y + yOff + r * ldy, scale);
}

void athn_16_to_f32_2d(int kind, int64_t rows, int64_t cols, const uint16_t *x, int64_t xOff, int64_t ldx,
                       float *y, int64_t yOff, int64_t ldy) {
  #pragma omp parallel for if(rows * cols >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) row_16_to_f32(kind, cols, x + xOff + r * ldx, y + yOff + r * ldy);
}
