// Reference MoE combine kernels: the fallback and test oracle of native/moe.c.
import type { F } from './nn.js';

/** out[t] = Σ_k gate[t,k] · y[slot[t·K+k]]; slot −1 (a dropped token) contributes nothing. */
export function moeCombineFwd(y: F, gate: F, slot: Int32Array, out: F, N: number, K: number, C: number): void {
  for (let t = 0; t < N; t++) {
    const o = t * C;
    for (let c = 0; c < C; c++) out[o + c] = 0;
    for (let k = 0; k < K; k++) {
      const s = slot[t * K + k]!;
      if (s < 0) continue;
      const g = gate[t * K + k]!, src = s * C;
      for (let c = 0; c < C; c++) out[o + c]! += g * y[src + c]!;
    }
  }
}

/** dy[slot] (+)= gate·dout[t] (dy may be null); dgate[t,k] += dout[t]·y[slot] (dgate may be null). */
export function moeCombineBwd(dout: F, y: F, gate: F, slot: Int32Array, dy: F | null, dgate: F | null, N: number, K: number, C: number, acc: boolean): void {
  for (let t = 0; t < N; t++) {
    const g = t * C;
    for (let k = 0; k < K; k++) {
      const s = slot[t * K + k]!;
      if (s < 0) continue;
      const w = gate[t * K + k]!, src = s * C;
      if (dy) {
        if (acc) for (let c = 0; c < C; c++) dy[src + c]! += w * dout[g + c]!;
        else for (let c = 0; c < C; c++) dy[src + c] = w * dout[g + c]!;
      }
      if (dgate) {
        let dot = 0;
        for (let c = 0; c < C; c++) dot += dout[g + c]! * y[src + c]!;
        dgate[t * K + k]! += dot;
      }
    }
  }
}
