// Finite-difference cases for every rule in src/autograd/rules/nn.ts (float64 inputs).
import type { GradCase } from './types.js';
import { Tensor, fromStorage, tensor } from '../../src/core/tensor.js';
import { contiguousStrides } from '../../src/core/layout.js';
import { Rng } from '../../src/core/rng.js';
import { linear, matmul } from '../../src/ops/matmul.js';
import { attention } from '../../src/ops/attention.js';
import { crossEntropy, dropout, embedding, layerNorm, logSoftmax, rmsNorm, softmax } from '../../src/ops/nn.js';

let seed = 100;

/** Random float64 leaf that requires grad. */
function rand(shape: number[], scale = 1): Tensor {
  const rng = new Rng(seed++);
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float64Array(n);
  rng.fillNormal(d, 0, scale);
  const t = fromStorage(d, shape, 'float64');
  t.requiresGrad = true;
  return t;
}

/** A leaf view of a fresh random buffer of `baseShape` with the given layout. */
function randView(baseShape: number[], shape: number[], strides: number[], offset = 0): Tensor {
  const base = rand(baseShape);
  const v = base.view(shape, strides, offset);
  v.requiresGrad = true;
  return v;
}

/** Transposed (last two dims) view of a contiguous random buffer: logical shape `shape`, not contiguous. */
function randT(shape: number[]): Tensor {
  const nd = shape.length;
  const stored = [...shape.slice(0, -2), shape[nd - 1]!, shape[nd - 2]!];
  const st = contiguousStrides(stored);
  const strides = [...st.slice(0, -2), st[nd - 1]!, st[nd - 2]!];
  return randView(stored, shape, strides);
}

function ints(values: number[], shape: number[]): Tensor {
  return tensor(values, shape, 'int32');
}

/** q, k, v as (B, H, T, D) views of one (B, T, 3C) buffer, the way a split qkv projection makes them. */
function qkvViews(B: number, H: number, T: number, D: number): Tensor[] {
  const C = H * D;
  const base = rand([B, T, 3 * C]);
  return [0, 1, 2].map((i) => {
    const v = base.view([B, H, T, D], [T * 3 * C, D, 3 * C, 1], i * C);
    v.requiresGrad = true;
    return v;
  });
}

export const nnCases: GradCase[] = [
  // matmul: every transpose combination, batched, broadcast, views, bias, shared input
  { op: 'matmul', name: 'NN 2-D', inputs: () => [rand([3, 4]), rand([4, 5])], fn: ([a, b]) => matmul(a!, b!) },
  { op: 'matmul', name: 'TN 2-D', inputs: () => [rand([4, 3]), rand([4, 5])], fn: ([a, b]) => matmul(a!, b!, { transA: true }) },
  { op: 'matmul', name: 'NT 2-D', inputs: () => [rand([3, 4]), rand([5, 4])], fn: ([a, b]) => matmul(a!, b!, { transB: true }) },
  { op: 'matmul', name: 'TT 2-D', inputs: () => [rand([4, 3]), rand([5, 4])], fn: ([a, b]) => matmul(a!, b!, { transA: true, transB: true }) },
  { op: 'matmul', name: 'batched (2,3,4)@(2,4,5)', inputs: () => [rand([2, 3, 4]), rand([2, 4, 5])], fn: ([a, b]) => matmul(a!, b!) },
  { op: 'matmul', name: 'batched TT (2,4,3)@(2,5,4)', inputs: () => [rand([2, 4, 3]), rand([2, 5, 4])], fn: ([a, b]) => matmul(a!, b!, { transA: true, transB: true }) },
  { op: 'matmul', name: 'broadcast batch (2,1,3,4)@(3,4,2)', inputs: () => [rand([2, 1, 3, 4]), rand([3, 4, 2])], fn: ([a, b]) => matmul(a!, b!) },
  { op: 'matmul', name: 'flattened (2,3,4)@(4,5) and transB', inputs: () => [rand([2, 3, 4]), rand([5, 4])], fn: ([a, b]) => matmul(a!, b!, { transB: true }) },
  { op: 'matmul', name: 'flattened TN batch (2,4,3)@(4,5)', inputs: () => [rand([2, 4, 3]), rand([4, 5])], fn: ([a, b]) => matmul(a!, b!, { transA: true }) },
  { op: 'matmul', name: 'transposed views', inputs: () => [randT([2, 3, 4]), randT([4, 5])], fn: ([a, b]) => matmul(a!, b!) },
  { op: 'matmul', name: 'row-sliced view (ld > cols)', inputs: () => [randView([3, 7], [3, 4], [7, 1], 2), rand([4, 2])], fn: ([a, b]) => matmul(a!, b!) },
  { op: 'matmul', name: 'with bias (linear, 3-D input)', inputs: () => [rand([2, 3, 4]), rand([5, 4]), rand([5])], fn: ([x, w, b]) => linear(x!, w!, b!) },
  { op: 'matmul', name: 'with bias, batched broadcast', inputs: () => [rand([2, 3, 4]), rand([1, 4, 5]), rand([5])], fn: ([a, b, c]) => matmul(a!, b!, { bias: c! }) },
  { op: 'matmul', name: 'same tensor twice (a @ a^T)', inputs: () => [rand([3, 4])], fn: ([a]) => matmul(a!, a!, { transB: true }) },
  // softmax family
  { op: 'softmax', name: 'last axis', inputs: () => [rand([3, 5])], fn: ([x]) => softmax(x!) },
  { op: 'softmax', name: 'axis 0 of 3-D', inputs: () => [rand([3, 2, 4])], fn: ([x]) => softmax(x!, 0) },
  { op: 'softmax', name: 'non-contiguous input', inputs: () => [randT([4, 3])], fn: ([x]) => softmax(x!, -1) },
  { op: 'logSoftmax', name: 'last axis', inputs: () => [rand([3, 5])], fn: ([x]) => logSoftmax(x!) },
  { op: 'logSoftmax', name: 'axis 1 of 3-D', inputs: () => [rand([2, 4, 3])], fn: ([x]) => logSoftmax(x!, 1) },
  // cross-entropy
  { op: 'crossEntropy', name: '(N, V) with an ignored target', inputs: () => [rand([4, 5]), ints([1, -100, 4, 0], [4])], fn: ([l, t]) => crossEntropy(l!, t!) },
  { op: 'crossEntropy', name: '(B, T, V), custom ignoreIndex', inputs: () => [rand([2, 3, 6]), ints([0, 5, 2, 3, 3, 1], [2, 3])], fn: ([l, t]) => crossEntropy(l!, t!, { ignoreIndex: 3 }) },
  // norms
  { op: 'layerNorm', name: 'weight and bias', inputs: () => [rand([2, 3, 6]), rand([6]), rand([6])], fn: ([x, w, b]) => layerNorm(x!, w!, b!) },
  { op: 'layerNorm', name: 'no bias, non-contiguous x', inputs: () => [randT([5, 4]), rand([4])], fn: ([x, w]) => layerNorm(x!, w!, null, 1e-3) },
  { op: 'rmsNorm', name: 'weight', inputs: () => [rand([3, 7]), rand([7])], fn: ([x, w]) => rmsNorm(x!, w!) },
  // embedding
  { op: 'embedding', name: 'duplicate ids, 2-D idx', inputs: () => [rand([5, 3]), ints([1, 3, 1, 0, 3, 3], [2, 3])], fn: ([w, i]) => embedding(w!, i!) },
  // dropout: a fresh Rng per evaluation gives the same mask every time
  { op: 'dropout', name: 'p = 0.3, fixed seed', inputs: () => [rand([4, 9])], fn: ([x]) => dropout(x!, 0.3, { rng: new Rng(7) }) },
  // attention
  { op: 'attention', name: 'causal', inputs: () => [rand([1, 2, 4, 3]), rand([1, 2, 4, 3]), rand([1, 2, 4, 3])], fn: ([q, k, v]) => attention(q!, k!, v!) },
  { op: 'attention', name: 'not causal, Tk != Tq, Dv != D', inputs: () => [rand([2, 1, 3, 2]), rand([2, 1, 5, 2]), rand([2, 1, 5, 4])], fn: ([q, k, v]) => attention(q!, k!, v!, { causal: false, scale: 0.7 }) },
  { op: 'attention', name: 'causal, q/k/v strided views of one qkv buffer', inputs: () => qkvViews(2, 2, 3, 2), fn: ([q, k, v]) => attention(q!, k!, v!) },
  { op: 'attention', name: 'not causal, strided views', inputs: () => qkvViews(1, 2, 4, 2), fn: ([q, k, v]) => attention(q!, k!, v!, { causal: false }) },
  { op: 'attention', name: 'causal, T > block size (blocked GEMMs)', inputs: () => [rand([1, 1, 131, 2]), rand([1, 1, 131, 2]), rand([1, 1, 131, 1])], fn: ([q, k, v]) => attention(q!, k!, v!) },
  { op: 'attention', name: 'transposed (D, T) plane views', inputs: () => [randT([1, 2, 3, 2]), randT([1, 2, 3, 2]), rand([1, 2, 3, 2])], fn: ([q, k, v]) => attention(q!, k!, v!) },
];
