import type { Tensor } from '../../src/core/tensor.js';
import type { OpName } from '../../src/autograd/node.js';

/** One finite-difference case: float64 inputs (those with requiresGrad are checked) and a function of them. */
export interface GradCase {
  op: OpName;
  name: string;
  inputs: () => Tensor[];
  fn: (inputs: Tensor[]) => Tensor;
  eps?: number;
  tol?: number;
}
