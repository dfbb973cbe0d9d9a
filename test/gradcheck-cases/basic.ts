// Finite-difference cases for the element-wise, reduction and layout rules: plain,
// broadcast and non-contiguous (transposed, sliced) inputs, all float64.
import type { GradCase } from './types.js';
import { Tensor, fromStorage, tensor } from '../../src/core/tensor.js';
import { Rng } from '../../src/core/rng.js';
import * as op from '../../src/ops/index.js';

let seed = 100;

/** Leaf float64 tensor with values from N(0,1) (or transformed by f), requiring grad. */
function leaf(shape: number[], f: (v: number) => number = (v) => v, grad = true): Tensor {
  const rng = new Rng(seed++);
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = f(rng.normal());
  const t = fromStorage(d, shape, 'float64');
  t.requiresGrad = grad;
  return t;
}

/** A leaf that is the transpose (last two dims) of a contiguous buffer: non-contiguous. */
function tleaf(shape: number[], f?: (v: number) => number): Tensor {
  const nd = shape.length;
  const base = leaf([...shape.slice(0, nd - 2), shape[nd - 1]!, shape[nd - 2]!], f, false);
  const st = [...base.strides];
  [st[nd - 2], st[nd - 1]] = [st[nd - 1]!, st[nd - 2]!];
  const v = base.view(shape, st, 0);
  v.requiresGrad = true;
  return v;
}

/** A leaf that is a slice (stride gaps, non-zero offset) of a bigger buffer along the last dim. */
function sleaf(shape: number[], f?: (v: number) => number): Tensor {
  const nd = shape.length;
  const big = [...shape];
  big[nd - 1] = shape[nd - 1]! + 3;
  const base = leaf(big, f, false);
  const v = base.view(shape, base.strides, 1);
  v.requiresGrad = true;
  return v;
}

const pos = (v: number) => 0.5 + Math.abs(v);
const awayFromZero = (v: number) => (v >= 0 ? 0.2 + v : v - 0.2);

function unaryCases(name: GradCase['op'], fn: (x: Tensor) => Tensor, f?: (v: number) => number): GradCase[] {
  return [
    { op: name, name: 'contiguous [3,4]', inputs: () => [leaf([3, 4], f)], fn: ([x]) => fn(x!) },
    { op: name, name: 'transposed [4,3]', inputs: () => [tleaf([4, 3], f)], fn: ([x]) => fn(x!) },
    { op: name, name: 'sliced [2,5]', inputs: () => [sleaf([2, 5], f)], fn: ([x]) => fn(x!) },
  ];
}

export const basicCases: GradCase[] = [
  // binary
  { op: 'add', name: 'same shape', inputs: () => [leaf([3, 4]), leaf([3, 4])], fn: ([a, b]) => op.add(a!, b!) },
  { op: 'add', name: 'broadcast [3,1] + [4]', inputs: () => [leaf([3, 1]), leaf([4])], fn: ([a, b]) => op.add(a!, b!) },
  { op: 'add', name: 'number operand', inputs: () => [leaf([5])], fn: ([a]) => op.add(a!, 2.5) },
  { op: 'add', name: 'transposed + sliced', inputs: () => [tleaf([4, 3]), sleaf([4, 3])], fn: ([a, b]) => op.add(a!, b!) },
  { op: 'add', name: 'same tensor twice', inputs: () => [leaf([6])], fn: ([a]) => op.add(a!, a!) },
  { op: 'sub', name: 'broadcast [2,3,4] - [1,4]', inputs: () => [leaf([2, 3, 4]), leaf([1, 4])], fn: ([a, b]) => op.sub(a!, b!) },
  { op: 'sub', name: 'transposed - broadcast scalar tensor', inputs: () => [tleaf([3, 5]), leaf([])], fn: ([a, b]) => op.sub(a!, b!) },
  { op: 'mul', name: 'broadcast [3,1] * [1,4]', inputs: () => [leaf([3, 1]), leaf([1, 4])], fn: ([a, b]) => op.mul(a!, b!) },
  { op: 'mul', name: 'x * x', inputs: () => [leaf([7])], fn: ([a]) => op.mul(a!, a!) },
  { op: 'mul', name: 'sliced * transposed', inputs: () => [sleaf([4, 3]), tleaf([4, 3])], fn: ([a, b]) => op.mul(a!, b!) },
  { op: 'mul', name: 'number operand', inputs: () => [tleaf([2, 3])], fn: ([a]) => op.mul(a!, -1.5) },
  { op: 'div', name: 'broadcast [2,3] / [3]', inputs: () => [leaf([2, 3]), leaf([3], awayFromZero)], fn: ([a, b]) => op.div(a!, b!) },
  { op: 'div', name: 'transposed / sliced', inputs: () => [tleaf([3, 4]), sleaf([3, 4], pos)], fn: ([a, b]) => op.div(a!, b!) },
  // unary
  ...unaryCases('neg', op.neg),
  ...unaryCases('exp', op.exp),
  ...unaryCases('log', op.log, pos),
  ...unaryCases('sqrt', op.sqrt, pos),
  ...unaryCases('rsqrt', op.rsqrt, pos),
  ...unaryCases('pow', (x) => op.pow(x, 3)),
  ...unaryCases('pow', (x) => op.pow(x, 2)).map((c) => ({ ...c, name: `square ${c.name}` })),
  ...unaryCases('pow', (x) => op.pow(x, -1.5), pos).map((c) => ({ ...c, name: `x^-1.5 ${c.name}` })),
  ...unaryCases('tanh', op.tanh),
  ...unaryCases('sigmoid', op.sigmoid),
  ...unaryCases('relu', op.relu, awayFromZero),
  ...unaryCases('gelu', op.gelu),
  ...unaryCases('silu', op.silu),
  ...unaryCases('scale', (x) => op.scale(x, 0.75)),
  { op: 'gelu', name: 'wide range', inputs: () => [leaf([20], (v) => 4 * v)], fn: ([x]) => op.gelu(x!) },
  // reductions
  { op: 'sum', name: 'all', inputs: () => [leaf([3, 4])], fn: ([x]) => op.sum(x!) },
  { op: 'sum', name: 'axis 1', inputs: () => [leaf([3, 4, 2])], fn: ([x]) => op.sum(x!, 1) },
  { op: 'sum', name: 'axes [0,2] keepDims', inputs: () => [leaf([3, 4, 2])], fn: ([x]) => op.sum(x!, [0, 2], true) },
  { op: 'sum', name: 'transposed, axis -1', inputs: () => [tleaf([2, 5, 3])], fn: ([x]) => op.sum(x!, -1) },
  { op: 'mean', name: 'all', inputs: () => [leaf([3, 4])], fn: ([x]) => op.mean(x!) },
  { op: 'mean', name: 'axis 0 keepDims, sliced', inputs: () => [sleaf([3, 4])], fn: ([x]) => op.mean(x!, 0, true) },
  { op: 'mean', name: 'axes [1,2]', inputs: () => [tleaf([2, 3, 4])], fn: ([x]) => op.mean(x!, [1, 2]) },
  { op: 'max', name: 'axis 1', inputs: () => [leaf([3, 5])], fn: ([x]) => op.max(x!, 1) },
  { op: 'max', name: 'axis 0 keepDims', inputs: () => [leaf([4, 3, 2])], fn: ([x]) => op.max(x!, 0, true) },
  { op: 'max', name: 'transposed, axis -1', inputs: () => [tleaf([2, 4, 3])], fn: ([x]) => op.max(x!, -1) },
  // layout
  { op: 'reshape', name: 'view with -1', inputs: () => [leaf([3, 4])], fn: ([x]) => op.mul(op.reshape(x!, [2, -1]), op.reshape(x!, [2, 6])) },
  { op: 'reshape', name: 'copy of a transposed input', inputs: () => [tleaf([3, 4])], fn: ([x]) => op.reshape(x!, [6, 2]) },
  { op: 'reshape', name: 'unsqueeze/squeeze', inputs: () => [leaf([3, 4])], fn: ([x]) => op.squeeze(op.unsqueeze(x!, 1), 1) },
  { op: 'permute', name: '3-d', inputs: () => [leaf([2, 3, 4])], fn: ([x]) => op.exp(op.permute(x!, [2, 0, 1])) },
  { op: 'permute', name: 'transpose of a sliced input', inputs: () => [sleaf([3, 4])], fn: ([x]) => op.transpose(x!, 0, 1) },
  { op: 'expand', name: '[3,1] to [2,3,4]', inputs: () => [leaf([3, 1])], fn: ([x]) => op.mul(op.expand(x!, [2, 3, 4]), op.expand(x!, [2, 3, 4])) },
  { op: 'expand', name: 'transposed with -1', inputs: () => [tleaf([1, 3])], fn: ([x]) => op.expand(x!, [4, -1]) },
  { op: 'slice', name: 'axis 1 [1,3)', inputs: () => [leaf([3, 5])], fn: ([x]) => op.slice(x!, 1, 1, 3) },
  { op: 'slice', name: 'negative bounds, overlapping slices', inputs: () => [leaf([4, 3])], fn: ([x]) => op.add(op.slice(x!, 0, -3, -1), op.slice(x!, 0, 0, 2)) },
  { op: 'slice', name: 'split into 3 of a transposed input', inputs: () => [tleaf([6, 2])], fn: ([x]) => { const [a, b, c] = op.split(x!, 3, 0); return op.add(op.mul(a!, b!), c!); } },
  { op: 'contiguous', name: 'transposed', inputs: () => [tleaf([3, 4])], fn: ([x]) => op.contiguous(x!) },
  { op: 'contiguous', name: 'permuted then summed', inputs: () => [leaf([2, 3, 4])], fn: ([x]) => op.sum(op.contiguous(op.permute(x!, [1, 2, 0])), 0) },
  { op: 'concat', name: 'axis 1, three inputs', inputs: () => [leaf([2, 3]), tleaf([2, 2]), leaf([2, 1])], fn: ([a, b, c]) => op.concat([a!, b!, c!], 1) },
  { op: 'concat', name: 'axis 0, same tensor twice', inputs: () => [sleaf([2, 3])], fn: ([a]) => op.concat([a!, a!], 0) },
  {
    op: 'gather', name: 'axis 1 with repeats',
    inputs: () => [leaf([3, 4]), tensor([0, 3, 3, 1, 1, 1, 2, 0, 3], [3, 3], 'int32')],
    fn: ([x, i]) => op.gather(x!, i!, 1),
  },
  {
    op: 'gather', name: 'axis 0 of a transposed input',
    inputs: () => [tleaf([3, 4]), tensor([2, 0, 1, 2, 1, 1, 0, 0], [2, 4], 'int32')],
    fn: ([x, i]) => op.gather(x!, i!, 0),
  },
  {
    op: 'where', name: 'int32 cond, broadcast a',
    inputs: () => [tensor([1, 0, 0, 1, 1, 0], [2, 3], 'int32'), leaf([3]), leaf([2, 3])],
    fn: ([c, a, b]) => op.where(c!, a!, b!),
  },
  {
    op: 'where', name: 'float mask [3,1], transposed b, number a',
    inputs: () => [tensor([1, 0, 1], [3, 1], 'float64'), tleaf([3, 4])],
    fn: ([c, b]) => op.where(c!, -2, b!),
  },
  {
    op: 'cast', name: 'float64 -> float32 -> float64', eps: 1e-2, tol: 1e-4,
    inputs: () => [leaf([3, 4])],
    fn: ([x]) => op.mul(op.cast(op.cast(x!, 'float32'), 'float64'), 3),
  },
];
