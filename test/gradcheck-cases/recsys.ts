// Finite-difference cases for the recommender rules (src/autograd/rules/recsys.ts).
import type { GradCase } from './types.js';
import { Tensor, fromStorage } from '../../src/core/tensor.js';
import { Rng } from '../../src/core/rng.js';
import { dotInteraction } from '../../src/ops/dot-interaction.js';
import { add } from '../../src/ops/elementwise.js';
import { permute } from '../../src/ops/shape.js';

let seed = 1300;

function rand(shape: number[]): Tensor {
  const rng = new Rng(seed++);
  const d = new Float64Array(shape.reduce((a, b) => a * b, 1));
  rng.fillNormal(d);
  const t = fromStorage(d, shape, 'float64');
  t.requiresGrad = true;
  return t;
}

export const recsysCases: GradCase[] = [
  { op: 'dotInteraction', name: 'B=3, F=2, D=4', inputs: () => [rand([3, 4]), rand([2, 3, 4])], fn: ([x, e]) => dotInteraction(x!, e!) },
  // e as a strided view (sample-major rows permuted to field-major), and both inputs used twice:
  // the second backward accumulates into the gradients the first one wrote.
  { op: 'dotInteraction', name: 'strided e, inputs used twice (accumulating)', inputs: () => [rand([2, 3]), rand([2, 4, 3])],
    fn: ([x, e]) => { const ef = permute(e!, [1, 0, 2]); return add(dotInteraction(x!, ef), dotInteraction(x!, ef)); } },
  { op: 'dotInteraction', name: 'one field', inputs: () => [rand([2, 5]), rand([1, 2, 5])], fn: ([x, e]) => dotInteraction(x!, e!) },
];
