// TypeScript references of native/vocab-parallel.c: the vocab-parallel cross-entropy's row
// loops (src/ops/group.ts). The fallback where the native library is missing or the
// logits are float64, and the oracle of test/vocab-parallel-kernels.test.ts.
//
// Each loop is its own function: inline in the op, V8 compiled a loop on the stack, then
// threw the code away when the op reached statements past it that had not run yet (once
// per call, so every training step ran them slowly and recompiled them on a helper
// thread); as functions they are compiled once and stay.
export type F = Float32Array | Float64Array;

export function vpceRowMax(z: F, N: number, Vl: number, max: F): void {
  for (let i = 0; i < N; i++) {
    let m = -Infinity;
    for (let j = 0, o = i * Vl; j < Vl; j++) if (z[o + j]! > m) m = z[o + j]!;
    max[i] = m;
  }
}

/** sums[i]: the row's sum of exp(z - max); sums[N + i]: the target's logit where this rank holds the target. */
export function vpceSumExp(z: F, N: number, Vl: number, max: F, t: Int32Array, vocabStart: number, ignoreIndex: number, sums: F): void {
  for (let i = 0; i < N; i++) {
    const m = max[i]!;
    let s = 0;
    for (let j = 0, o = i * Vl; j < Vl; j++) s += Math.exp(z[o + j]! - m);
    sums[i] = s;
    const local = t[i]! - vocabStart;
    if (t[i] !== ignoreIndex && local >= 0 && local < Vl) sums[N + i] = z[i * Vl + local]!;
  }
}

/** g (+)= scale · (softmax(z) − onehot(target held here)); ignored rows get nothing (zeros when fresh). */
export function vpceGrad(z: F, g: F, N: number, Vl: number, max: F, sum: F, targets: Int32Array, vocabStart: number, ignoreIndex: number, scale: number, fresh: boolean): void {
  for (let i = 0; i < N; i++) {
    const o = i * Vl;
    if (targets[i] === ignoreIndex) {
      if (fresh) g.fill(0, o, o + Vl);
      continue;
    }
    const m = max[i]!, inv = 1 / sum[i]!;
    for (let j = 0; j < Vl; j++) {
      const d = scale * Math.exp(z[o + j]! - m) * inv;
      g[o + j] = fresh ? d : g[o + j]! + d;
    }
    const local = targets[i]! - vocabStart;
    if (local >= 0 && local < Vl) g[o + local] = g[o + local]! - scale;
  }
}
