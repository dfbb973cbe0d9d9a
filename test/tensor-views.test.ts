// Views share storage, contiguous() copies only when needed, broadcasting rules and
// their error messages, and the values of the layout / reduction / element-wise ops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, arange, type Tensor } from '../src/core/tensor.js';
import * as op from '../src/ops/index.js';
import { Rng } from '../src/core/rng.js';

const vals = (t: Tensor) => Array.from(op.toFloat32Array(t));
const range = (shape: number[], dtype: 'float32' | 'float64' = 'float32') => op.cast(op.reshape(arange(shape.reduce((a, b) => a * b, 1), 'int32'), shape), dtype);

test('reshape of a contiguous tensor is a view; of a transposed one, a copy', () => {
  const x = range([2, 3]);
  const r = op.reshape(x, [3, -1]);
  assert.deepEqual(r.shape, [3, 2]);
  assert.equal(r.box, x.box, 'shares storage');
  x.data[0] = 42;
  assert.equal(vals(r)[0], 42, 'writes through the base are visible in the view');
  const t = op.transpose(x, 0, 1);
  assert.equal(t.box, x.box);
  assert.equal(t.isContiguous(), false);
  const rc = op.reshape(t, [6]);
  assert.notEqual(rc.box, x.box, 'non-contiguous reshape copies');
  assert.deepEqual(vals(rc), [42, 3, 1, 4, 2, 5]);
  assert.throws(() => op.reshape(x, [4, -1]), /reshape \[2, 3\]: cannot infer -1 in \[4, -1\] for 6 elements/);
  assert.throws(() => op.reshape(x, [-1, -1]), /only one dimension can be -1/);
  assert.throws(() => op.reshape(x, [5]), /shape \[5\] \(5 elements\) does not match 6 elements/);
  assert.deepEqual(op.unsqueeze(x, 0).shape, [1, 2, 3]);
  assert.deepEqual(op.squeeze(op.unsqueeze(x, -1)).shape, [2, 3]);
});

test('permute, transpose, expand and slice are views with the right values', () => {
  const x = range([2, 3, 4]);
  const p = op.permute(x, [2, 0, 1]);
  assert.deepEqual(p.shape, [4, 2, 3]);
  assert.equal(p.box, x.box);
  assert.deepEqual(vals(p).slice(0, 6), [0, 4, 8, 12, 16, 20]);
  assert.throws(() => op.permute(x, [0, 0, 1]), /is not a permutation/);
  const e = op.expand(tensor([1, 2, 3], [3, 1]), [2, 3, 4]);
  assert.deepEqual(e.strides, [0, 1, 0]);
  assert.deepEqual(vals(e).slice(0, 8), [1, 1, 1, 1, 2, 2, 2, 2]);
  assert.throws(() => op.expand(tensor([1, 2, 3], [3]), [2, 4]), /expand: dim 1 of \[3\] has size 3, cannot expand to 4/);
  const s = op.slice(x, 2, 1, -1);
  assert.deepEqual(s.shape, [2, 3, 2]);
  assert.equal(s.offset, 1);
  assert.deepEqual(vals(s).slice(0, 4), [1, 2, 5, 6]);
  assert.deepEqual(op.slice(x, 0, 5, 9).shape, [0, 3, 4], 'clamped like Python');
  const parts = op.split(x, [1, 3], 2);
  assert.deepEqual(parts.map((q) => q.shape), [[2, 3, 1], [2, 3, 3]]);
  assert.throws(() => op.split(x, 3, 2), /does not split into 3 equal parts/);
  assert.throws(() => op.split(x, [1, 1], 2), /do not add up to dim 2 of size 4/);
});

test('contiguous() returns the tensor itself when already contiguous and copies otherwise', () => {
  const x = range([3, 4]);
  assert.equal(op.contiguous(x), x);
  const rowSlice = op.slice(x, 0, 1, 3); // contiguous with an offset
  assert.equal(op.contiguous(rowSlice), rowSlice);
  const colSlice = op.slice(x, 1, 1, 3);
  const c = op.contiguous(colSlice);
  assert.notEqual(c, colSlice);
  assert.equal(c.isContiguous(), true);
  assert.deepEqual(vals(c), [1, 2, 5, 6, 9, 10]);
  const big = range([300, 7]); // native copy path
  const bt = op.contiguous(op.transpose(big, 0, 1));
  assert.equal(vals(bt)[1], 7);
  assert.equal(vals(bt)[300], 1);
});

test('broadcasting follows NumPy and reports incompatible shapes', () => {
  const a = range([2, 1, 3]), b = range([4, 1]);
  const c = op.add(a, b);
  assert.deepEqual(c.shape, [2, 4, 3]);
  const expect: number[] = [];
  for (let i = 0; i < 2; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 3; k++) expect.push(i * 3 + k + j);
  assert.deepEqual(vals(c), expect);
  assert.deepEqual(vals(op.sub(tensor([5, 7]), 1)), [4, 6]);
  assert.deepEqual(vals(op.mul(tensor([5, 7], [2], 'float64'), tensor([2], [], 'float64'))), [10, 14]);
  assert.deepEqual(vals(op.div(tensor([1, 3]), tensor([2, 4]))), [0.5, 0.75]);
  assert.throws(() => op.add(range([2, 3]), range([4])), /add: shapes \[2, 3\] and \[4\] do not broadcast \(dim 1: 3 vs 4\)/);
  assert.throws(() => op.mul(range([2, 3]), range([2, 3], 'float64')), /mul: dtype mismatch float32 vs float64/);
  assert.throws(() => op.add(arange(3), arange(3)), /add: expected a float32 or float64 tensor, got int32/);
  // Large broadcast through the native kernel, transposed operand.
  const x = op.randn([257, 129], new Rng(1)), y = op.randn([129], new Rng(2));
  const z = op.add(op.transpose(op.contiguous(op.transpose(x, 0, 1)), 0, 1), y);
  const xv = vals(x), yv = vals(y), zv = vals(z);
  for (const i of [0, 128, 129 * 100 + 5, 257 * 129 - 1]) assert.equal(zv[i], Math.fround(xv[i]! + yv[i % 129]!));
});

test('reductions: sum, mean, max, argmax values', () => {
  const x = range([2, 3, 4], 'float64');
  assert.equal(op.sum(x).item(), 276);
  assert.deepEqual(vals(op.sum(x, [0, 2])), [60, 92, 124]);
  assert.deepEqual(op.sum(x, 1, true).shape, [2, 1, 4]);
  assert.deepEqual(vals(op.mean(x, -1)), [1.5, 5.5, 9.5, 13.5, 17.5, 21.5]);
  assert.deepEqual(op.sum(x, []).shape, [2, 3, 4], 'an empty axis list reduces nothing');
  assert.throws(() => op.sum(x, [1, -2]), /axis 1 repeated/);
  assert.throws(() => op.sum(x, 3), /axis 3 out of range for 3-d tensor/);
  const m = tensor([1, 5, 5, 2, NaN, 0, -1, -3, -2], [3, 3]);
  assert.deepEqual(vals(op.max(m, 1)), [5, NaN, -1]);
  assert.deepEqual(Array.from(op.argmax(m, 1).data), [1, 1, 0], 'first maximum; NaN wins');
  assert.deepEqual(Array.from(op.argmax(m, 0).data), [1, 1, 0]);
  assert.deepEqual(op.max(m, 0, true).shape, [1, 3]);
});

test('concat, gather and where', () => {
  const a = range([2, 2]), b = range([2, 3]);
  assert.deepEqual(vals(op.concat([a, op.add(b, 10)], 1)), [0, 1, 10, 11, 12, 2, 3, 13, 14, 15]);
  assert.throws(() => op.concat([a, b], 0), /concat: tensor 1 has shape \[2, 3\], incompatible with \[2, 2\] along axis 0/);
  const x = tensor([10, 11, 12, 20, 21, 22], [2, 3]);
  const idx = tensor([2, 0, 1, 1], [2, 2], 'int32');
  assert.deepEqual(vals(op.gather(x, idx, 1)), [12, 10, 21, 21]);
  assert.deepEqual(vals(op.gather(x, tensor([1, 0, 1], [1, 3], 'int32'), 0)), [20, 11, 22]);
  assert.throws(() => op.gather(x, tensor([3], [1, 1], 'int32'), 1), /gather: 1 index value\(s\) out of range \[0, 3\) along axis 1/);
  assert.throws(() => op.gather(x, tensor([0], [1, 1]), 1), /index must be int32/);
  const w = op.where(tensor([1, 0, 1], [3], 'int32'), tensor([1, 2, 3, 4, 5, 6], [2, 3]), -1);
  assert.deepEqual(vals(w), [1, -1, 3, 4, -1, 6]);
  assert.deepEqual(vals(op.where(tensor([0, 0.5], [2, 1]), 7, tensor([1, 2]))), [1, 2, 7, 7]);
});

test('unary ops on views and in float64', () => {
  const x = tensor([-2, -0.5, 0, 0.5, 2, 3], [2, 3], 'float64');
  const t = op.transpose(x, 0, 1);
  assert.deepEqual(vals(op.relu(t)), [0, 0.5, 0, 2, 0, 3]);
  assert.deepEqual(vals(op.neg(t)), [2, -0.5, 0.5, -2, -0, -3]);
  assert.deepEqual(vals(op.pow(tensor([2, 3]), 2)), [4, 9]);
  assert.deepEqual(vals(op.scale(tensor([2, 3]), 0.5)), [1, 1.5]);
  const g = op.toFloat32Array(op.gelu(tensor([1], [1], 'float64')))[0]!;
  assert.ok(Math.abs(g - 0.8411919906082768) < 1e-7);
  assert.ok(Math.abs(op.toFloat32Array(op.silu(tensor([1])))[0]! - 0.7310585786300049) < 1e-6);
  assert.ok(Math.abs(op.toFloat32Array(op.rsqrt(tensor([4])))[0]! - 0.5) < 1e-7);
});
