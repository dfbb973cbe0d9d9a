// Kernel table of the vocab-parallel cross-entropy (src/ops/group.ts): float32 logits of at
// least nativeMinElements() elements go to native/vocab-parallel.c, everything else
// (float64, tiny tensors, no library) to the TypeScript references. In TypeScript these
// loops cost about 5× the fused single-process cross-entropy per logit (Math.exp per
// element, no SIMD), the largest CPU term of a tensor-parallel gpt-tiny step after the GEMMs.
import { nativeFor } from './dispatch.js';
import { nativeFamily } from './native.js';
import * as ref from './reference/vocab-parallel.js';

export type F = ref.F;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;

const bind = nativeFamily<{ rowMax: Fn; sumExp: Fn; grad: Fn }>({
  rowMax: 'void athn_vpce_row_max_f32(const float *z, int64_t N, int64_t Vl, _Inout_ float *max)',
  sumExp: 'void athn_vpce_sum_exp_f32(const float *z, int64_t N, int64_t Vl, const float *max, const int32_t *t, int32_t vocabStart, int32_t ignore, _Inout_ float *sums)',
  grad: 'void athn_vpce_grad_f32(const float *z, _Inout_ float *g, int64_t N, int64_t Vl, const float *max, const float *sum, const int32_t *t, int32_t vocabStart, int32_t ignore, float scale, int fresh)',
});

function nat(z: F, n: number, ...others: F[]) {
  if (!(z instanceof Float32Array) || others.some((a) => !(a instanceof Float32Array)) || !nativeFor('float32', n)) return null;
  return bind();
}

export function vpceRowMax(z: F, N: number, Vl: number, max: F): void {
  const k = nat(z, N * Vl, max);
  if (k) k.rowMax(z, N, Vl, max);
  else ref.vpceRowMax(z, N, Vl, max);
}

export function vpceSumExp(z: F, N: number, Vl: number, max: F, t: Int32Array, vocabStart: number, ignoreIndex: number, sums: F): void {
  const k = nat(z, N * Vl, max, sums);
  if (k) k.sumExp(z, N, Vl, max, t, vocabStart, ignoreIndex, sums);
  else ref.vpceSumExp(z, N, Vl, max, t, vocabStart, ignoreIndex, sums);
}

export function vpceGrad(z: F, g: F, N: number, Vl: number, max: F, sum: F, targets: Int32Array, vocabStart: number, ignoreIndex: number, scale: number, fresh: boolean): void {
  const k = nat(z, N * Vl, g, max, sum);
  if (k) k.grad(z, g, N, Vl, max, sum, targets, vocabStart, ignoreIndex, scale, fresh ? 1 : 0);
  else ref.vpceGrad(z, g, N, Vl, max, sum, targets, vocabStart, ignoreIndex, scale, fresh);
}
