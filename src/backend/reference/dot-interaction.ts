// Reference DLRM dot interaction: the fallback (float64, tiny batches, no library) and
// the test oracle of native/dot-interaction.c.
//
// Sample b's vectors are z_0 = x[b] (x is (B, D)) and z_{f+1} = e[f, b] (e is (F, B, D),
// field-major, so one field's rows are contiguous as an embedding lookup returns them).
// out (B, D + P), P = M(M-1)/2 with M = F + 1:
//   out[b, 0:D]        = x[b]
//   out[b, D + p(i,j)] = <z_i, z_j> for i < j, pairs in row-major order of the upper triangle.
import type { F } from './nn.js';

/** Sample b's vector i (0: x, i > 0: field i - 1) starts at this offset of x or e. */
const at = (i: number, b: number, B: number, D: number): number => (i === 0 ? b * D : ((i - 1) * B + b) * D);

export function dotInteractionFwd(x: F, e: F, out: F, B: number, nF: number, D: number): void {
  const M = nF + 1, W = D + (M * (M - 1)) / 2;
  for (let b = 0; b < B; b++) {
    let o = b * W;
    for (let d = 0; d < D; d++) out[o + d] = x[b * D + d]!;
    o += D;
    for (let i = 0; i < M; i++) {
      const zi = i === 0 ? x : e, oi = at(i, b, B, D);
      for (let j = i + 1; j < M; j++) {
        const oj = at(j, b, B, D);
        let s = 0;
        for (let d = 0; d < D; d++) s += zi[oi + d]! * e[oj + d]!;
        out[o++] = s;
      }
    }
  }
}

/**
 * Gradients from g (B, D + P): dx[b] = g[b, 0:D] + Σ_j g_{0j} z_j, de[f, b] = Σ_{j≠f+1} g_{(f+1)j} z_j.
 * dx / de may be null (not needed); acc = add into them, else overwrite.
 */
export function dotInteractionBwd(g: F, x: F, e: F, dx: F | null, de: F | null, B: number, nF: number, D: number, accX: boolean, accE: boolean): void {
  const M = nF + 1, W = D + (M * (M - 1)) / 2;
  const dz = new Float64Array(M * D);
  for (let b = 0; b < B; b++) {
    const go = b * W;
    dz.fill(0);
    for (let d = 0; d < D; d++) dz[d] = g[go + d]!;
    let p = go + D;
    for (let i = 0; i < M; i++) {
      const zi = i === 0 ? x : e, oi = at(i, b, B, D);
      for (let j = i + 1; j < M; j++) {
        const oj = at(j, b, B, D), w = g[p++]!;
        for (let d = 0; d < D; d++) {
          dz[i * D + d]! += w * e[oj + d]!;
          dz[j * D + d]! += w * zi[oi + d]!;
        }
      }
    }
    if (dx) for (let d = 0; d < D; d++) dx[b * D + d] = (accX ? dx[b * D + d]! : 0) + dz[d]!;
    if (de) {
      for (let f = 0; f < nF; f++) {
        const o = (f * B + b) * D;
        for (let d = 0; d < D; d++) de[o + d] = (accE ? de[o + d]! : 0) + dz[(f + 1) * D + d]!;
      }
    }
  }
}
