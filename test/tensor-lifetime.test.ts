// Scope disposal (use-after-dispose throws), views keeping storage alive, buffer pool
// reuse, RNG determinism, and gradients through views surviving their scope.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { pool } from '../src/core/buffer-pool.js';
import { Rng } from '../src/core/rng.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import * as op from '../src/ops/index.js';

test('scope disposes intermediates; results and kept tensors survive', () => {
  let inner!: Tensor, kept!: Tensor;
  const a = tensor([1, 2, 3]);
  const out = scope(() => {
    inner = op.add(a, 1);
    kept = op.mul(a, 2).keep();
    return { r: op.exp(inner) };
  });
  assert.equal(inner.isDisposed, true);
  assert.throws(() => inner.data, /was used after it was disposed/);
  assert.throws(() => op.add(inner, 1), /was used after it was disposed/);
  assert.equal(kept.isDisposed, false);
  assert.equal(out.r.isDisposed, false);
  assert.ok(Math.abs(out.r.toArray()[0]! - Math.exp(2)) < 1e-5);
});

test('a view keeps its base storage alive after the base is disposed', () => {
  const v = scope(() => {
    const base = op.randn([4, 300], new Rng(3));
    return op.slice(op.transpose(base, 0, 1), 0, 10, 20);
  });
  assert.deepEqual(v.shape, [10, 4]);
  assert.equal(op.toFloat32Array(v).length, 40);
  v.dispose();
  assert.throws(() => v.data, /used after it was disposed/);
});

test('the buffer pool hands back released buffers of the same size', () => {
  const n = 4096;
  const step = (i: number) => scope(() => { op.gelu(op.add(op.randn([n], new Rng(i)), 1)); });
  step(0);
  const before = pool.stats();
  for (let i = 1; i <= 10; i++) step(i);
  const after = pool.stats();
  assert.ok(after.hits - before.hits >= 20, `expected pool hits, got ${after.hits - before.hits}`);
  assert.equal(after.allocatedBytes, before.allocatedBytes, 'steady state allocates nothing new');
});

test('RNG-based creation is deterministic per seed', () => {
  const a = op.randn([1000], new Rng(5)), b = op.randn([1000], new Rng(5)), c = op.randn([1000], new Rng(6));
  assert.deepEqual(op.toFloat32Array(a), op.toFloat32Array(b));
  assert.notDeepEqual(op.toFloat32Array(a), op.toFloat32Array(c));
  const u = op.toFloat32Array(op.uniform([1000], -2, 3, new Rng(1), 'float64'));
  assert.ok(u.every((v) => v >= -2 && v < 3));
  const r = op.toFloat32Array(op.rand([1000], new Rng(1)));
  assert.ok(r.every((v) => v >= 0 && v <= 1));
  const s = op.randn([20000], new Rng(9), 'float32', 2, 1);
  const m = op.mean(s).item();
  assert.ok(Math.abs(m - 1) < 0.05, `mean ${m}`);
  const rng = new Rng(11);
  const st = rng.getState();
  const x = op.toFloat32Array(op.randn([7], rng));
  rng.setState(st);
  assert.deepEqual(op.toFloat32Array(op.randn([7], rng)), x);
  assert.throws(() => op.randn([2], rng, 'int32'), /randn: dtype must be float32 or float64/);
});

test('fill and copyInto write through views', () => {
  const x = op.reshape(op.cast(tensor([0, 1, 2, 3, 4, 5]), 'float32'), [2, 3]);
  op.fill(op.slice(x, 1, 1, 2), 9);
  assert.deepEqual(x.toArray(), [0, 9, 2, 3, 9, 5]);
  op.copyInto(op.transpose(x, 0, 1), tensor([7, 8], [2]));
  assert.deepEqual(x.toArray(), [7, 7, 7, 8, 8, 8]);
  assert.throws(() => op.copyInto(x, tensor([1, 2], [2])), /copyInto: shapes \[2, 3\] and \[2\] do not broadcast/);
  assert.throws(() => op.copyInto(x, tensor([1, 2, 3], [3], 'float64')), /dtype mismatch/);
});

test('gradients through views and broadcasts accumulate correctly and outlive the scope', () => {
  const w = op.randn([300], new Rng(1));
  w.requiresGrad = true;
  const x = op.randn([4, 300], new Rng(2));
  x.requiresGrad = true;
  scope(() => {
    const y = op.mul(op.add(x, w), 2); // grad w = 2 * 4 per element
    const z = op.sum(op.slice(op.transpose(y, 0, 1), 1, 1, 3)); // rows 1..2 of x only
    backward(z);
  });
  assert.ok(w.grad && !w.grad.isDisposed);
  const gw = op.toFloat32Array(w.grad!), gx = op.toFloat32Array(x.grad!);
  assert.ok(gw.every((v) => v === 4), 'w gets 2 per selected row');
  for (let i = 0; i < 4 * 300; i++) assert.equal(gx[i], i >= 300 && i < 900 ? 2 : 0);
  // noGrad records nothing.
  const out = noGrad(() => op.add(x, 1));
  assert.equal(out.requiresGrad, false);
  assert.equal(out.node, null);
});

test('fused unary backward accumulates into an existing gradient (float32, native size)', () => {
  const x = op.randn([1000], new Rng(4));
  x.requiresGrad = true;
  scope(() => backward(op.sum(op.add(op.gelu(x), op.tanh(x)))));
  const g = op.toFloat32Array(x.grad!), xv = op.toFloat32Array(x);
  const k = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < 1000; i += 97) {
    const v = xv[i]!, u = k * (v + 0.044715 * v ** 3), t = Math.tanh(u);
    const expect = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * 0.044715 * v * v) + (1 - Math.tanh(v) ** 2);
    assert.ok(Math.abs(g[i]! - expect) < 1e-5, `element ${i}: ${g[i]} vs ${expect}`);
  }
});
