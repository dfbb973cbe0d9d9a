/* Math helpers shared by the kernel files. Everything is static inline so that each
 * kernel's loop inlines it and gcc can vectorise the loop: a call into libm (or into
 * another translation unit) would keep the loop scalar. */
#ifndef ATHN_KERNEL_MATH_H
#define ATHN_KERNEL_MATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Row loops fork OpenMP threads only above this many elements: below it the
 * fork/join costs more than the work. */
#define PAR_MIN 32768

static inline float f_as(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t u_as(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* e^r for |r| <= ln2/2 (Cephes expf polynomial, ~1 ulp). The exp functions only
 * differ in how they reduce x to r and scale the result by 2^n. */
static inline float exp_poly(float r) {
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  return fmaf(p, r * r, r) + 1.0f;
}

/* exp(x) for x <= 88.7; below -87.3 it returns the smallest normal (≈1e-38), which
 * is 0 for every purpose of the softmax-style kernels (terms of a sum, probabilities).
 * One clamp and one 2^n factor make it cheaper than basic.c's athn_expf, which must
 * give Inf, subnormals and NaN exactly because users call exp() directly. */
static inline float fast_expf(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  float n = rintf(x * 1.44269504088896341f);
  float r = fmaf(n, -0.693359375f, x);
  r = fmaf(n, 2.12194440e-4f, r);
  return exp_poly(r) * f_as((uint32_t)(((int32_t)n + 127) << 23));
}

/* bfloat16 <-> float32, bit-exact with src/core/dtype.ts (round to nearest even, NaN
 * kept quiet): the saved-activation kernels of nn-lowp.c convert inside their loops. */
static inline float bf16_to_f32(uint16_t h) { return f_as((uint32_t)h << 16); }
static inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = u_as(f);
  const uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  const uint16_t quiet = (uint16_t)((u >> 16) | 0x40u);
  return (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
}

static inline float row_max(const float *x, int64_t n) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}


/* LayerNorm row statistics (mean and 1/sqrt(var + eps)), shared by the fp32 kernel and its
 * bf16-packing variant so both normalize with the same arithmetic. */
static inline void layernorm_row_stats(const float *xr, int64_t C, float eps, float *mu_out, float *rs_out) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < C; j++) s += xr[j];
  float mu = s / (float)C;
  float v = 0.f;
#pragma omp simd reduction(+ : v)
  for (int64_t j = 0; j < C; j++) {
    float d = xr[j] - mu;
    v += d * d;
  }
  *mu_out = mu;
  *rs_out = 1.0f / sqrtf(v / (float)C + eps);
}

#endif
