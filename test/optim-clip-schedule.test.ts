// Global grad-norm clipping and LR schedules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireNative } from './helpers/require-native.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { nativeOptim } from '../src/backend/native-optim.js';
import {
  AdamW, clipCoefficient, clipGradNorm, gradNorm, gradSumSquares, lrAt, LrScheduler, shardSegments,
  type LrScheduleConfig,
} from '../src/optim/index.js';

function withGrad(n: number, rng: Rng, dtype: 'float32' | 'float64' = 'float32', scale = 1): Tensor {
  const p = fromStorage(dtype === 'float32' ? new Float32Array(n) : new Float64Array(n), [n], dtype).keep();
  p.requiresGrad = true;
  const g = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  rng.fillNormal(g, 0, scale);
  p.grad = fromStorage(g, [n], dtype).keep();
  return p;
}

function exactNorm(ps: Tensor[]): number {
  let s = 0;
  for (const p of ps) for (const v of p.grad!.data) s += v * v;
  return Math.sqrt(s);
}

for (const [label, minNative] of [['native', 0], ['reference', Infinity]] as const) {
  test(`clipGradNorm (${label}): norm, in-place clipping, no-op below the limit`, () => {
    setNativeMinElements(minNative);
    try {
      const rng = new Rng(21);
      const ps = [withGrad(1000, rng), withGrad(7, rng), withGrad(100003, rng, 'float32', 0.01)];
      const expected = exactNorm(ps);
      assert.ok(Math.abs(gradNorm(ps) - expected) <= 1e-9 * expected);
      const before = ps.map((p) => (p.grad!.data as Float32Array).slice());
      const norm = clipGradNorm(ps, 1.0);
      assert.ok(Math.abs(norm - expected) <= 1e-9 * expected, 'returns the norm before clipping');
      const c = 1.0 / (expected + 1e-6);
      ps.forEach((p, i) => {
        const g = p.grad!.data as Float32Array;
        for (let j = 0; j < g.length; j += 97) assert.ok(Math.abs(g[j]! - Math.fround(before[i]![j]! * c)) <= 1e-6 * Math.abs(before[i]![j]!));
      });
      assert.ok(Math.abs(gradNorm(ps) - 1) < 1e-5);
      const snapshot = ps.map((p) => (p.grad!.data as Float32Array).slice());
      assert.ok(clipGradNorm(ps, 10) < 10);
      ps.forEach((p, i) => assert.deepEqual(p.grad!.data, snapshot[i]));
    } finally {
      setNativeMinElements(64);
    }
  });
}

test('clipGradNorm: NaN and Inf give a non-finite norm and leave the gradients alone', () => {
  setNativeMinElements(0);
  try {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const rng = new Rng(22);
      const ps = [withGrad(100000, rng), withGrad(10, rng)];
      (ps[0]!.grad!.data as Float32Array)[54321] = bad;
      const snap = (ps[1]!.grad!.data as Float32Array).slice();
      const n = clipGradNorm(ps, 1.0);
      assert.ok(!Number.isFinite(n), `norm with ${bad} is ${n}`);
      assert.deepEqual(ps[1]!.grad!.data, snap);
      assert.equal(clipCoefficient(n, 1.0), 1);
    }
    // float64 reference path too
    const p = withGrad(10, new Rng(1), 'float64');
    (p.grad!.data as Float64Array)[3] = NaN;
    assert.ok(Number.isNaN(gradNorm([p])));
  } finally {
    setNativeMinElements(64);
  }
});

test('native sum of squares uses double accumulation and does not depend on thread count', (t) => {
  const nat = requireNative(nativeOptim(), 'native optimizer kernels');
  if (!nat) { t.skip('native library not built'); return; }
  // 2^24 + many small values: float accumulation would lose them all
  const n = 1_000_001;
  const x = new Float32Array(n).fill(1e-3);
  x[0] = 4096;
  const s = nat.sumsq(x, n);
  const exact = 4096 * 4096 + (n - 1) * Math.fround(1e-3) ** 2;
  assert.ok(Math.abs(s - exact) <= 1e-9 * exact, `${s} vs ${exact}`);
  const rng = new Rng(3);
  const y = new Float32Array(3_000_017);
  rng.fillNormal(y);
  const a = nat.sumsq(y, y.length);
  assert.equal(nat.sumsq(y, y.length), a, 'deterministic');
});

test('clip through the optimizer: gradScale = clipCoefficient equals in-place clipping; segments sum to the global norm', () => {
  setNativeMinElements(0);
  try {
    const mk = () => { const r = new Rng(23); return [withGrad(500, r, 'float32', 3), withGrad(300, r, 'float32', 3)]; };
    const a = mk(), b = mk();
    const oa = new AdamW(a), ob = new AdamW(b);
    const na = clipGradNorm(a, 1.0);
    oa.step();
    const nb = clipGradNorm(b, 1.0, { scaleInPlace: false });
    assert.equal(na, nb);
    ob.step({ gradScale: clipCoefficient(nb, 1.0) });
    a.forEach((p, i) => {
      const x = p.data as Float32Array, y = b[i]!.data as Float32Array;
      for (let j = 0; j < x.length; j++) assert.ok(Math.abs(x[j]! - y[j]!) <= 1e-7, `${i}:${j}`);
    });
    // ZeRO ranks: per-shard sums of squares add up to the global one
    const c = mk();
    const total = gradSumSquares(c);
    const parts = gradSumSquares(shardSegments(c, 0, 321)) + gradSumSquares(shardSegments(c, 321, 800));
    assert.ok(Math.abs(parts - total) <= 1e-12 * total);
    // a tied weight listed twice counts once
    assert.equal(gradSumSquares([c[0]!, c[0]!]), gradSumSquares([c[0]!]));
  } finally {
    setNativeMinElements(64);
  }
});

test('LR schedules at boundary steps', () => {
  const cos: LrScheduleConfig = { kind: 'cosine', maxLr: 1e-3, minLr: 1e-4, warmupSteps: 10, totalSteps: 110 };
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-15, `${a} vs ${b}`);
  close(lrAt(cos, 0), 1e-4);          // (0+1)/10 of maxLr
  close(lrAt(cos, 4), 5e-4);
  close(lrAt(cos, 9), 1e-3);          // warmup ends at maxLr
  close(lrAt(cos, 10), 1e-3);         // decay starts at maxLr
  close(lrAt(cos, 60), 5.5e-4);       // halfway: (max+min)/2
  close(lrAt(cos, 110), 1e-4);
  close(lrAt(cos, 1000), 1e-4);
  close(lrAt(cos, 35), 1e-4 + 9e-4 * 0.5 * (1 + Math.cos(Math.PI * 0.25)));
  const lin: LrScheduleConfig = { kind: 'linear', maxLr: 1, minLr: 0, warmupSteps: 0, totalSteps: 4 };
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((s) => lrAt(lin, s)), [1, 0.75, 0.5, 0.25, 0, 0]);
  const con: LrScheduleConfig = { kind: 'constant', maxLr: 0.5, warmupSteps: 2 };
  assert.deepEqual([0, 1, 2, 100].map((s) => lrAt(con, s)), [0.25, 0.5, 0.5, 0.5]);
  const noWarm: LrScheduleConfig = { kind: 'cosine', maxLr: 2, minLr: 0, totalSteps: 2 };
  assert.deepEqual([0, 1, 2].map((s) => lrAt(noWarm, s)), [2, 1, 0]);
  const warmOnly: LrScheduleConfig = { kind: 'cosine', maxLr: 2, minLr: 0.5, warmupSteps: 4, totalSteps: 4 };
  assert.deepEqual([3, 4, 5].map((s) => lrAt(warmOnly, s)), [2, 0.5, 0.5]);
});

test('LrScheduler scales every group by its initial lr and validates its config', () => {
  const p = withGrad(4, new Rng(1)), q = withGrad(4, new Rng(2));
  const opt = new AdamW([{ params: [p], lr: 1e-3 }, { params: [q], lr: 5e-4 }]);
  const s = new LrScheduler(opt, { kind: 'linear', maxLr: 1e-3, minLr: 0, warmupSteps: 0, totalSteps: 10 });
  assert.equal(s.apply(5), 5e-4);
  assert.ok(Math.abs(opt.paramGroups[0]!.lr - 5e-4) < 1e-18);
  assert.ok(Math.abs(opt.paramGroups[1]!.lr - 2.5e-4) < 1e-18);
  assert.throws(() => new LrScheduler(opt, { kind: 'cosine', maxLr: 1 }), /field 'totalSteps'/);
  assert.throws(() => new LrScheduler(opt, { kind: 'linear', maxLr: 1, warmupSteps: 5, totalSteps: 3 }), /totalSteps/);
  assert.throws(() => new LrScheduler(opt, { kind: 'step' as never, maxLr: 1 }), /unknown kind 'step'/);
});
