/* Mixed-precision variants of the attention softmax kernels (attention.c): they read
 * fp32 scores and write the probabilities P in 16 bits (bf16 or f16, the GEMM operand
 * and the activation saved for backward, half the bytes of fp32 P), and read that 16-bit
 * P in backward while computing in fp32. kind: 1 = bf16, 2 = f16.
 * Oracle: src/backend/reference/lowp.ts. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include "attention-row.h"
#include "cast-row.h"

/* P16 = round16(softmax(scale * S)) per row with the causal mask (masked entries 0);
 * S is used as fp32 scratch and left holding the unrounded probabilities. */
void athn_attn_softmax_16out(float *S, uint16_t *P16, int64_t mats, int64_t Tq, int64_t Tk, float scale, int causal, int kind) {
  int64_t rows = mats * Tq;
#pragma omp parallel for if (rows * Tk >= PAR_MIN) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    attn_softmax_row(S + r * Tk, attn_row_len(r % Tq, Tk, causal), Tk, scale);
    row_f32_to_16(kind, Tk, S + r * Tk, P16 + r * Tk, 1.0f);
  }
}

/* In place on dP: dS = alpha * P * (dP - rowsum(dP * P)) with P read from 16 bits. */
void athn_attn_softmax_bwd_16in(const uint16_t *P16, float *dP, int64_t mats, int64_t Tq, int64_t Tk, float alpha, int causal, int kind) {
  int64_t rows = mats * Tq;
#pragma omp parallel if (rows * Tk >= PAR_MIN)
  {
    float *p = (float *)malloc(sizeof(float) * (size_t)(Tk > 0 ? Tk : 1));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      int64_t n = attn_row_len(r % Tq, Tk, causal);
      row_16_to_f32(kind, n, P16 + r * Tk, p);
      attn_softmax_bwd_row(p, dP + r * Tk, n, Tk, alpha);
    }
    free(p);
  }
}
