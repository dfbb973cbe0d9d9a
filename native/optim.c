/* Optimizer kernels: one fused pass per parameter (or per flat ZeRO segment).
 * Each update reads the gradient once and folds the gradient scale (clipping, loss
 * scaling) into that read, so clipping costs no extra pass over the gradients.
 * Scalars that depend only on the step (bias corrections, decayed lr) are computed
 * in double by the caller and passed in, exactly as PyTorch computes them in Python.
 * Float math is float32 per element, in PyTorch's operation order. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define PAR_MIN 32768

/* PyTorch torch.optim.AdamW (single-tensor path):
 *   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
 *   p -= step_size * m / (sqrt(v)/bc2_sqrt + eps)
 * with step_size = lr/(1-b1^t) and bc2_sqrt = sqrt(1-b2^t). */
void athn_adamw_f32(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                    float decay, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2,
                    float eps, float step_size, float bc2_sqrt, float grad_scale) {
#pragma omp parallel for simd if(n >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] * grad_scale;
    float mi = beta1 * m[i] + one_minus_beta1 * gi;
    float vi = beta2 * v[i] + one_minus_beta2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * mi / denom;
  }
}

/* PyTorch torch.optim.SGD: d = g + wd*p; buf = first ? d : momentum*buf + (1-dampening)*d;
 * d = nesterov ? d + momentum*buf : buf; p -= lr*d. `buf` may be NULL when momentum == 0. */
void athn_sgd_f32(float *restrict p, const float *restrict g, float *restrict buf, int64_t n,
                  float lr, float momentum, float one_minus_dampening, float wd, int nesterov, int first,
                  float grad_scale) {
  if (buf == NULL || momentum == 0.0f) {
#pragma omp parallel for simd if(n >= PAR_MIN) schedule(static)
    for (int64_t i = 0; i < n; i++) {
      float d = g[i] * grad_scale + wd * p[i];
      p[i] = p[i] - lr * d;
    }
    return;
  }
#pragma omp parallel for simd if(n >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float d = g[i] * grad_scale + wd * p[i];
    float b = first ? d : momentum * buf[i] + one_minus_dampening * d;
    buf[i] = b;
    float u = nesterov ? d + momentum * b : b;
    p[i] = p[i] - lr * u;
  }
}

/* PyTorch torch.optim.Adagrad: d = g + wd*p; sum += d*d; p -= clr * d / (sqrt(sum) + eps)
 * with clr = lr / (1 + (t-1)*lr_decay). */
void athn_adagrad_f32(float *restrict p, const float *restrict g, float *restrict sum, int64_t n,
                      float clr, float wd, float eps, float grad_scale) {
#pragma omp parallel for simd if(n >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float d = g[i] * grad_scale + wd * p[i];
    float s = sum[i] + d * d;
    sum[i] = s;
    p[i] = p[i] - clr * d / (sqrtf(s) + eps);
  }
}

/* Sum of squares in double. Blocks of a size that depends only on n are summed
 * independently and then added in order, so the result does not depend on the
 * thread count (a reproducible grad norm). NaN/Inf inputs give a NaN/Inf sum. */
#define SUMSQ_BLOCK 65536
#define LANES 16

static double sumsq_block(const float *restrict x, int64_t n) {
  double acc[LANES] = {0};
  int64_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (int j = 0; j < LANES; j++) acc[j] += (double)x[i + j] * (double)x[i + j];
  double s = 0;
  for (; i < n; i++) s += (double)x[i] * (double)x[i];
  for (int j = 0; j < LANES; j++) s += acc[j];
  return s;
}

double athn_sumsq_f32(const float *x, int64_t n) {
  if (n <= SUMSQ_BLOCK) return sumsq_block(x, n);
  int64_t nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
  double stackbuf[256];
  double *part = nb <= 256 ? stackbuf : (double *)malloc((size_t)nb * sizeof(double));
  if (part == NULL) return sumsq_block(x, n);
#pragma omp parallel for if(n >= PAR_MIN) schedule(static)
  for (int64_t b = 0; b < nb; b++) {
    int64_t lo = b * SUMSQ_BLOCK, hi = lo + SUMSQ_BLOCK < n ? lo + SUMSQ_BLOCK : n;
    part[b] = sumsq_block(x + lo, hi - lo);
  }
  double s = 0;
  for (int64_t b = 0; b < nb; b++) s += part[b];
  if (part != stackbuf) free(part);
  return s;
}

/* x *= s (gradient clipping when the scale is not folded into the optimizer). */
void athn_scale_f32(float *restrict x, int64_t n, float s) {
#pragma omp parallel for simd if(n >= PAR_MIN) schedule(static)
  for (int64_t i = 0; i < n; i++) x[i] *= s;
}
