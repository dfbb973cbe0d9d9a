// NN ops: forward values against hand-computed ones, ignoreIndex, accumulation
// semantics and error messages. Runs on whichever backend is present.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromStorage, tensor, type Tensor } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { scope } from '../src/core/scope.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { linear, matmul } from '../src/ops/matmul.js';
import { attention } from '../src/ops/attention.js';
import { crossEntropy, dropout, embedding, layerNorm, logSoftmax, rmsNorm, softmax } from '../src/ops/nn.js';

setNativeMinElements(0);

function near(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5, what = ''): void {
  assert.equal(actual.length, expected.length, `${what} length`);
  for (let i = 0; i < actual.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tol * Math.max(1, Math.abs(expected[i]!)), `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

const f32 = (v: number[], shape: number[]) => tensor(v, shape, 'float32');
const i32 = (v: number[], shape: number[]) => tensor(v, shape, 'int32');

test('matmul: 2-D values, transposes, batch broadcast, bias', () => {
  const a = f32([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = f32([1, 0, 0, 1, 1, 1], [3, 2]);
  near(matmul(a, b).toArray(), [4, 5, 10, 11]);
  near(matmul(b, a, { transA: true, transB: true }).toArray(), matmul(a, b).toArray().length === 4 ? [4, 10, 5, 11] : []);
  near(matmul(a, a, { transB: true }).toArray(), [14, 32, 32, 77]);
  near(matmul(a, a, { transA: true }).toArray(), [17, 22, 27, 22, 29, 36, 27, 36, 45]);
  // (2, 1, 2, 3) @ (3, 3, 2) → (2, 3, 2, 2)
  const a4 = f32([...[1, 2, 3, 4, 5, 6], ...[0, 0, 0, 1, 1, 1]], [2, 1, 2, 3]);
  const b3 = f32([...[1, 0, 0, 1, 1, 1], ...[2, 0, 0, 2, 2, 2], ...[0, 0, 0, 0, 0, 0]], [3, 3, 2]);
  const c = matmul(a4, b3);
  assert.deepEqual(c.shape, [2, 3, 2, 2]);
  near(c.toArray(), [4, 5, 10, 11, 8, 10, 20, 22, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 4, 4, 0, 0, 0, 0]);
  const bias = f32([10, 20], [2]);
  near(matmul(a, b, { bias }).toArray(), [14, 25, 20, 31]);
});

test('linear: x (B, T, in) with PyTorch-layout weight and bias', () => {
  const x = f32([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
  const w = f32([1, 0, 0, 0, 1, 0], [2, 3]); // picks x[..., 0] and x[..., 1]
  const y = linear(x, w, f32([0.5, -0.5], [2]));
  assert.deepEqual(y.shape, [2, 2, 2]);
  near(y.toArray(), [1.5, 1.5, 4.5, 4.5, 7.5, 7.5, 10.5, 10.5]);
  near(linear(x, w).toArray(), [1, 2, 4, 5, 7, 8, 10, 11]);
});

test('matmul backward accumulates into existing gradients (beta = 1)', () => {
  scope(() => {
    const x = f32([1, 2, 3, 4], [2, 2]);
    const w = f32([1, 1, 1, 1], [2, 2]);
    const b = f32([0, 0], [2]);
    for (const t of [x, w, b]) t.requiresGrad = true;
    const run = () => backward(linear(x, w, b), { grad: f32([1, 1, 1, 1], [2, 2]) });
    run();
    const gw1 = w.grad!.toArray(), gx1 = x.grad!.toArray(), gb1 = b.grad!.toArray();
    run();
    near(w.grad!.toArray(), gw1.map((v) => 2 * v));
    near(x.grad!.toArray(), gx1.map((v) => 2 * v));
    near(b.grad!.toArray(), [4, 4]);
    near(gw1, [4, 6, 4, 6]);
  });
});

test('matmul errors name the shapes', () => {
  assert.throws(() => matmul(f32([1, 2, 3, 4, 5, 6], [2, 3]), f32([1, 2, 3, 4], [2, 2])), /inner dims differ.*K=3.*K=2/);
  assert.throws(() => matmul(f32([1, 2], [2]), f32([1, 2], [2, 1])), /at least 2 dims/);
  assert.throws(() => matmul(f32(new Array(12).fill(1), [2, 2, 3]), f32(new Array(18).fill(1), [3, 3, 2])), /do not broadcast/);
  assert.throws(() => matmul(f32([1, 2], [1, 2]), f32([1, 2], [2, 1]), { bias: f32([1, 2], [2]) }), /bias must have shape \[1\]/);
  assert.throws(() => linear(f32([1, 2], [1, 2]), f32([1, 2, 3], [1, 3])), /in_features=3/);
  assert.throws(() => matmul(i32([1], [1, 1]), i32([1], [1, 1])), /float32 or float64/);
});

test('softmax and logSoftmax values, any axis', () => {
  const x = f32([1, 2, 3, 1, 1, 1], [2, 3]);
  const e = [Math.exp(1), Math.exp(2), Math.exp(3)], s = e[0]! + e[1]! + e[2]!;
  near(softmax(x).toArray(), [e[0]! / s, e[1]! / s, e[2]! / s, 1 / 3, 1 / 3, 1 / 3]);
  near(logSoftmax(x).toArray(), [1 - Math.log(s) - 0, 2 - Math.log(s), 3 - Math.log(s), -Math.log(3), -Math.log(3), -Math.log(3)].map((v, i) => (i < 3 ? v : v)), 1e-5);
  const s0 = softmax(x, 0).toArray();
  const c0 = 1 / (1 + Math.exp(-0)), c1 = Math.exp(1) / (Math.exp(1) + Math.exp(2)), c2 = Math.exp(1) / (Math.exp(1) + Math.exp(3));
  near(s0, [c0, 1 - c1, 1 - c2, 1 - c0, c1, c2]);
  // stable for huge logits
  near(softmax(f32([1000, 1000], [1, 2])).toArray(), [0.5, 0.5]);
  assert.throws(() => softmax(x, 2), /axis 2 out of range/);
});

test('crossEntropy: mean over non-ignored targets, ignoreIndex, NaN when all ignored', () => {
  const logits = f32([0, 0, Math.log(3), 0, 5, 5], [3, 2]);
  const l = crossEntropy(logits, i32([1, 0, -100], [3]));
  // row 0: -log(1/2); row 1: -log(3/4); row 2 ignored
  near([l.item()], [(Math.log(2) + Math.log(4 / 3)) / 2]);
  assert.deepEqual(l.shape, []);
  const l2 = crossEntropy(logits, i32([1, 0, 1], [3]), { ignoreIndex: 1 });
  near([l2.item()], [Math.log(4 / 3)]);
  assert.ok(Number.isNaN(crossEntropy(logits, i32([-100, -100, -100], [3])).item()));
  // (B, T, V)
  const l3 = crossEntropy(f32([0, 0, 0, 0, 0, 0, 0, 0], [2, 2, 2]), i32([0, 1, 1, -100], [2, 2]));
  near([l3.item()], [Math.log(2)]);
});

test('crossEntropy backward: (softmax - onehot) / count, ignored rows get zero', () => {
  scope(() => {
    const logits = f32([0, 0, Math.log(3), 0, 5, 5], [3, 2]);
    logits.requiresGrad = true;
    backward(crossEntropy(logits, i32([1, 0, -100], [3])));
    near(logits.grad!.toArray(), [0.25, -0.25, -0.125, 0.125, 0, 0]);
  });
});

test('crossEntropy errors', () => {
  const logits = f32([0, 0, 0, 0], [2, 2]);
  assert.throws(() => crossEntropy(logits, i32([0, 5], [2])), /target 5 at position 1 is out of range \[0, 2\)/);
  assert.throws(() => crossEntropy(logits, i32([0, -1], [2])), /target -1 at position 1/);
  assert.throws(() => crossEntropy(logits, i32([0, 1, 1], [3])), /targets shape \[3\] must equal .* \[2\]/);
  assert.throws(() => crossEntropy(logits, f32([0, 1], [2])), /must be int32/);
});

test('layerNorm and rmsNorm values', () => {
  const x = f32([1, 2, 3, 2, 2, 2], [2, 3]);
  const w = f32([1, 1, 2], [3]), b = f32([0, 1, 0], [3]);
  const r = 1 / Math.sqrt(2 / 3 + 1e-5);
  near(layerNorm(x, w, b).toArray(), [-r, 1, 2 * r, 0, 1, 0], 1e-5);
  near(layerNorm(x, w, null).toArray(), [-r, 0, 2 * r, 0, 0, 0], 1e-5);
  const y = f32([3, 4], [1, 2]);
  const rs = 1 / Math.sqrt(12.5 + 1e-5);
  near(rmsNorm(y, f32([1, 2], [2])).toArray(), [3 * rs, 8 * rs]);
  assert.throws(() => layerNorm(x, f32([1, 1], [2]), null), /weight must have shape \[3\]/);
  assert.throws(() => rmsNorm(x, tensor([1, 1, 1], [3], 'float64')), /dtype float64 differs/);
});

test('embedding: values, shape, duplicate ids accumulate, bounds error', () => {
  scope(() => {
    const w = f32([0, 1, 10, 11, 20, 21], [3, 2]);
    w.requiresGrad = true;
    const e = embedding(w, i32([2, 0, 2, 1], [2, 2]));
    assert.deepEqual(e.shape, [2, 2, 2]);
    near(e.toArray(), [20, 21, 0, 1, 20, 21, 10, 11]);
    backward(e, { grad: f32([1, 1, 1, 1, 1, 1, 1, 1], [2, 2, 2]) });
    near(w.grad!.toArray(), [1, 1, 1, 1, 2, 2]);
    assert.throws(() => embedding(w, i32([0, 1, 7], [3])), /index 7 at position 2 is out of range for a table of 3 rows/);
    assert.throws(() => embedding(w, i32([-1], [1])), /index -1 at position 0/);
  });
});

test('dropout: identity cases, determinism, scaling, p = 1', () => {
  const x = fromStorage(new Float32Array(4096).fill(1), [64, 64], 'float32');
  assert.equal(dropout(x, 0), x);
  assert.equal(dropout(x, 0.5, { training: false }), x);
  const a = dropout(x, 0.25, { rng: new Rng(9) }).toArray();
  const b = dropout(x, 0.25, { rng: new Rng(9) }).toArray();
  assert.deepEqual(a, b);
  const c = dropout(x, 0.25, { rng: new Rng(10) }).toArray();
  assert.notDeepEqual(a, c);
  let kept = 0;
  for (const v of a) {
    assert.ok(v === 0 || Math.abs(v - 1 / 0.75) < 1e-6);
    if (v !== 0) kept++;
  }
  assert.ok(Math.abs(kept / a.length - 0.75) < 0.03, `keep rate ${kept / a.length}`);
  assert.ok(dropout(x, 1).toArray().every((v) => v === 0));
  assert.throws(() => dropout(x, 1.5), /p must be in \[0, 1\]/);
});

function naiveAttention(q: number[][], k: number[][], v: number[][], causal: boolean, scale: number): number[][] {
  return q.map((qi, i) => {
    const s = k.map((kj, j) => (causal && j > i ? -Infinity : scale * qi.reduce((acc, x, d) => acc + x * kj[d]!, 0)));
    const m = Math.max(...s);
    const e = s.map((x) => Math.exp(x - m));
    const z = e.reduce((p, c) => p + c, 0);
    return v[0]!.map((_, d) => e.reduce((acc, p, j) => acc + (p / z) * v[j]![d]!, 0));
  });
}

test('attention equals naive softmax(q k^T * scale) v; output is a (B,T,H,D)-stored view', () => {
  const rng = new Rng(5);
  const T = 5, D = 3, H = 2;
  const mk = () => {
    const d = new Float32Array(H * T * D);
    rng.fillNormal(d);
    return fromStorage(d, [1, H, T, D], 'float32');
  };
  const q = mk(), k = mk(), v = mk();
  const rows = (t: Tensor, h: number) => Array.from({ length: T }, (_, i) => Array.from({ length: D }, (_, d) => t.data[(h * T + i) * D + d]!));
  for (const causal of [true, false]) {
    const o = noGrad(() => attention(q, k, v, { causal }));
    assert.deepEqual(o.shape, [1, H, T, D]);
    assert.deepEqual(o.strides, [T * H * D, D, H * D, 1]);
    const got = o.toArray();
    for (let h = 0; h < H; h++) {
      const ref = naiveAttention(rows(q, h), rows(k, h), rows(v, h), causal, 1 / Math.sqrt(D)).flat();
      near(got.slice(h * T * D, (h + 1) * T * D), ref, 1e-5, `head ${h} causal=${causal}`);
    }
  }
  assert.throws(() => attention(q, f32([1], [1, 1, 1, 1]), v), /k \[1, 1, 1, 1\] does not match q/);
  assert.throws(() => attention(f32([1], [1, 1, 1]), k, v), /q must be \(B, H, T, D\)/);
});
