// Finite-difference cases for the tensor-parallel collectives (src/autograd/rules/group.ts).
import type { GradCase } from './types.js';
import { Tensor, fromStorage } from '../../src/core/tensor.js';
import { Rng } from '../../src/core/rng.js';
import { mul } from '../../src/ops/index.js';
import { groupCopy, groupReduce, groupGather, groupScatter, vocabParallelCrossEntropy, type GroupCollectives } from '../../src/ops/group.js';
import type { F } from '../../src/backend/nn-kernels.js';
import { gatherLinear } from '../../src/ops/gather-linear.js';

let seed = 700;
function rand(shape: number[]): Tensor {
  const rng = new Rng(seed++);
  const d = new Float64Array(shape.reduce((a, b) => a * b, 1));
  rng.fillNormal(d);
  const t = fromStorage(d, shape, 'float64');
  t.requiresGrad = true;
  return t;
}
function ints(values: number[]): Tensor {
  return fromStorage(Int32Array.from(values), [values.length], 'int32');
}

/** A group of one rank: the collectives are identities, so these cases check each op's
 *  local arithmetic and its pairing with a backward rule. Several ranks (the
 *  conjugate collectives themselves) are checked across real processes in
 *  test/parallel-tp.test.ts, against the single-process model's gradients. */
const one: GroupCollectives = {
  rank: 0, size: 1,
  allReduce: () => undefined,
  allGather: (input: F, output: F) => { output.set(input); },
  reduceScatter: (input: F, output: F) => { output.set(input); },
};
const w = (shape: number[]) => { const t = rand(shape); t.requiresGrad = false; return t; };

export const groupCases: GradCase[] = [
  { op: 'groupCopy', name: '(2, 3)', inputs: () => [rand([2, 3]), w([2, 3])], fn: ([x, k]) => mul(groupCopy(x!, one), k!) },
  { op: 'groupReduce', name: '(3, 2)', inputs: () => [rand([3, 2]), w([3, 2])], fn: ([x, k]) => mul(groupReduce(x!, one), k!) },
  { op: 'groupGather', name: 'axis 1 of (2, 3, 2)', inputs: () => [rand([2, 3, 2]), w([2, 3, 2])], fn: ([x, k]) => mul(groupGather(x!, one, 1), k!) },
  { op: 'groupScatter', name: 'axis 1 of (2, 4, 3)', inputs: () => [rand([2, 4, 3]), w([2, 4, 3])], fn: ([x, k]) => mul(groupScatter(x!, one, 1), k!) },
  // consume: the exit takes over a temporary (here k·x, as a row-parallel GEMM output) whose storage is
  // reused or freed at once; the backward of the exit and of the op that produced it must not read it.
  { op: 'groupReduce', name: 'consume a temporary (3, 2)', inputs: () => [rand([3, 2]), w([3, 2])], fn: ([x, k]) => mul(groupReduce(mul(x!, k!), one, { consume: true }), k!) },
  { op: 'groupScatter', name: 'consume a temporary, axis 1 of (2, 4, 3)', inputs: () => [rand([2, 4, 3]), w([2, 4, 3])], fn: ([x, k]) => mul(groupScatter(mul(x!, k!), one, 1, { consume: true }), k!) },
  { op: 'vocabParallelCrossEntropy', name: 'one rank, ignored target', inputs: () => [rand([4, 5]), ints([1, -100, 4, 0])], fn: ([l, t]) => vocabParallelCrossEntropy(l!, t!, one, 0, 5) },
  { op: 'vocabParallelCrossEntropy', name: 'vocabulary slice [2, 7): some targets held elsewhere', inputs: () => [rand([4, 5]), ints([1, 3, 6, 0])], fn: ([l, t]) => vocabParallelCrossEntropy(l!, t!, one, 2, 8) },
  // sp's fused entry: gather along the sequence + linear, one node whose rule re-gathers and does not re-run the GEMM.
  { op: 'gatherLinear', name: 'with bias, axis 1 of (2, 3, 4) → 5', inputs: () => [rand([2, 3, 4]), rand([5, 4]), rand([5]), w([2, 3, 5])], fn: ([x, wt, b, k]) => mul(gatherLinear(x!, wt!, b!, one, 1), k!) },
  { op: 'gatherLinear', name: 'no bias, axis 0 of (3, 4) → 2', inputs: () => [rand([3, 4]), rand([2, 4]), w([3, 2])], fn: ([x, wt, k]) => mul(gatherLinear(x!, wt!, null, one, 0), k!) },
];
