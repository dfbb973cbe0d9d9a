/* Attention softmax kernels (float32) for src/ops/attention.ts (through
 * src/backend/nn-kernels.ts). They run in place on the score matrices between
 * attention's GEMMs and apply the causal mask themselves, so no mask tensor is built.
 * The oracle is src/backend/reference/nn.ts. */
#include <math.h>
#include <stdint.h>
#include "attention-row.h"

/* In place on S (mats matrices of Tq x Tk, contiguous): P = softmax(scale * S) per row,
 * with j > i masked (causal, top-left aligned like PyTorch's is_causal). Masked
 * entries are written as 0, so callers may leave them uncomputed in S. */
void athn_attn_softmax_f32(float *S, int64_t mats, int64_t Tq, int64_t Tk, float scale, int causal) {
  int64_t rows = mats * Tq;
#pragma omp parallel for if (rows * Tk >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) attn_softmax_row(S + r * Tk, attn_row_len(r % Tq, Tk, causal), Tk, scale);
}

/* In place on dP: dS = alpha * P * (dP - rowsum(dP * P)); masked entries set to 0. */
void athn_attn_softmax_bwd_f32(const float *P, float *dP, int64_t mats, int64_t Tq, int64_t Tk, float alpha, int causal) {
  int64_t rows = mats * Tq;
#pragma omp parallel for if (rows * Tk >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) attn_softmax_bwd_row(P + r * Tk, dP + r * Tk, attn_row_len(r % Tq, Tk, causal), Tk, alpha);
}
