// Cases for rules that belong to the autograd engine itself (recomputation).
import type { GradCase } from './types.js';
import { fromStorage } from '../../src/core/tensor.js';
import { Rng } from '../../src/core/rng.js';
import { checkpoint } from '../../src/autograd/checkpoint.js';
import { mul, tanh, add, matmul } from '../../src/ops/index.js';

function leaf(shape: number[], seed: number) {
  const r = new Rng(seed);
  const d = new Float64Array(shape.reduce((a, b) => a * b, 1));
  r.fillNormal(d);
  const t = fromStorage(d, shape, 'float64');
  t.requiresGrad = true;
  return t;
}

export const autogradCases: GradCase[] = [
  {
    op: 'checkpoint',
    name: 'recomputed tanh(x*x) @ w with a parameter captured by the closure',
    inputs: () => [leaf([3, 4], 1), leaf([4, 2], 2)],
    fn: ([x, w]) => checkpoint((xs) => matmul(tanh(mul(xs[0]!, xs[0]!)), w!), [x!], [w!]),
  },
  {
    op: 'checkpoint',
    name: 'two inputs, output used twice',
    inputs: () => [leaf([5], 3), leaf([5], 4)],
    fn: ([a, b]) => {
      const y = checkpoint((xs) => mul(xs[0]!, tanh(xs[1]!)), [a!, b!]);
      return add(y, mul(y, y));
    },
  },
];
