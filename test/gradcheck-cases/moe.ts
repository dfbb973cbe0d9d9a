// Finite-difference cases for the mixture-of-experts rules (src/autograd/rules/moe.ts).
import type { GradCase } from './types.js';
import { Tensor, fromStorage, empty } from '../../src/core/tensor.js';
import { Rng } from '../../src/core/rng.js';
import { groupedMatmul, moeCombine, moeDispatch, allToAllV, type RowExchange } from '../../src/ops/moe.js';
import { softmax } from '../../src/ops/nn.js';
import { gather } from '../../src/ops/shape.js';
import { div, mul } from '../../src/ops/elementwise.js';
import { sum } from '../../src/ops/reduce.js';
import { MoeMlp } from '../../src/nn/moe.js';
import { denseMoe } from '../../src/nn/moe-config.js';
import { scope } from '../../src/core/scope.js';

let seed = 900;

function rand(shape: number[], scale = 1): Tensor {
  const rng = new Rng(seed++);
  const d = new Float64Array(shape.reduce((a, b) => a * b, 1));
  rng.fillNormal(d, 0, scale);
  const t = fromStorage(d, shape, 'float64');
  t.requiresGrad = true;
  return t;
}

const i32 = (v: number[]) => Int32Array.from(v);

/** Reverses row order within each of two halves: an exchange whose adjoint is itself. */
const swapHalves: RowExchange = {
  group: 'test',
  forward: (x) => permuteRows(x, [3, 2, 1, 0, 5, 4]),
  backward: (g) => permuteRows(g, [3, 2, 1, 0, 5, 4].map((_, i, p) => p.indexOf(i))),
};

function permuteRows(x: Tensor, order: number[]): Tensor {
  const [S, C] = x.shape as [number, number];
  const out = empty([S, C], x.dtype);
  for (let i = 0; i < S; i++) (out.data as Float64Array).set((x.data as Float64Array).subarray(x.offset + order[i]! * C, x.offset + (order[i]! + 1) * C), i * C);
  return out;
}

/** A whole MoE layer in float64: router → top-2 → capacity (one token dropped) → experts → combine. */
function moeLayer(balance: 'aux' | 'swipe', capacityFactor: number, zLoss: number): GradCase['fn'] {
  return ([x]) => {
    const ctx = { device: 'cpu' as const, dtype: 'float64' as const, rng: new Rng(7) };
    const m = new MoeMlp(ctx, { ...denseMoe(), experts: 4, topK: 2, capacityFactor, balance, zLossCoef: zLoss, sharedExpert: true, dFF: 6 }, 5, 8, 2, 0);
    for (const p of m.parameters()) p.requiresGrad = false;
    const y = m.forward(x!, new Rng(1));
    return m.auxLoss ? scope(() => mul(y, m.auxLoss!)) : y;
  };
}

export const moeCases: GradCase[] = [
  { op: 'moeDispatch', name: 'rows repeated and skipped', inputs: () => [rand([4, 3])], fn: ([x]) => moeDispatch(x!, i32([2, 0, 2, 3, 1, 0])) },
  { op: 'moeDispatch', name: 'transposed (non-contiguous) input', inputs: () => { const b = rand([3, 4]); const v = b.view([4, 3], [1, 4], 0); v.requiresGrad = true; return [v]; }, fn: ([x]) => moeDispatch(x!, i32([3, 1, 1])) },
  { op: 'moeCombine', name: 'K=2 with a dropped assignment', inputs: () => [rand([5, 3]), rand([3, 2])], fn: ([y, g]) => moeCombine(y!, g!, i32([0, 4, -1, 2, 1, 3])) },
  { op: 'moeCombine', name: 'K=1, unused expert row', inputs: () => [rand([4, 3]), rand([3, 1])], fn: ([y, g]) => moeCombine(y!, g!, i32([2, 0, 3])) },
  { op: 'moeCombine', name: 'gates from softmax + gather + renormalise (router path)', inputs: () => [rand([4, 3]), rand([2, 3])],
    fn: ([y, logits]) => {
      const p = softmax(logits!);
      const sel = gather(p, fromStorage(i32([2, 0, 1, 2]), [2, 2], 'int32'), 1);
      return moeCombine(y!, div(sel, sum(sel, [1], true)), i32([0, 1, 2, 3]));
    } },
  { op: 'groupedMatmul', name: 'three groups, one empty, with bias', inputs: () => [rand([5, 3]), rand([3, 4, 3]), rand([3, 4])], fn: ([x, w, b]) => groupedMatmul(x!, w!, b!, i32([2, 0, 3])) },
  { op: 'groupedMatmul', name: 'padding rows past the groups (expert-parallel capacity)', inputs: () => [rand([6, 3]), rand([3, 4, 3]), rand([3, 4])], fn: ([x, w, b]) => groupedMatmul(x!, w!, b!, i32([2, 0, 1])) },
  { op: 'groupedMatmul', name: 'no bias, all groups used', inputs: () => [rand([4, 2]), rand([2, 3, 2])], fn: ([x, w]) => groupedMatmul(x!, w!, null, i32([1, 3])) },
  { op: 'allToAllV', name: 'row exchange and its adjoint', inputs: () => [rand([6, 3])], fn: ([x]) => allToAllV(x!, swapHalves) },
  { op: 'moeDispatch', name: 'MoE layer, capacity with drops, aux loss', inputs: () => [rand([2, 3, 5])], fn: moeLayer('aux', 0.5, 0) },
  { op: 'moeCombine', name: 'MoE layer, SWIPE reassignment, z-loss', inputs: () => [rand([2, 3, 5])], fn: moeLayer('swipe', 0.7, 0.1) },
];
