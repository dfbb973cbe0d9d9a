// AdamW against an independent step-by-step reference written from the PyTorch
// formulas; native kernel against the TS reference kernel; ZeRO segments against
// full updates; state dict round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireNative } from './helpers/require-native.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { nativeOptim } from '../src/backend/native-optim.js';
import { adamwReference } from '../src/backend/reference/optim.js';
import { AdamW, shardSegments, weightDecayGroups, type ParamSegment } from '../src/optim/index.js';

type F = Float32Array | Float64Array;

function param(shape: number[], rng: Rng, dtype: 'float32' | 'float64' = 'float32', name?: string): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  rng.fillNormal(d);
  const t = fromStorage(d, shape, dtype).keep();
  t.requiresGrad = true;
  if (name) t.name = name;
  return t;
}

function setGrad(p: Tensor, rng: Rng, scale = 1): void {
  const d = p.dtype === 'float32' ? new Float32Array(p.size) : new Float64Array(p.size);
  rng.fillNormal(d, 0, scale);
  p.grad = fromStorage(d, p.shape, p.dtype).keep();
}

/** torch.optim.AdamW for one tensor, written out per element in float64. */
class RefAdamW {
  m: number[]; v: number[]; t = 0;
  constructor(n: number, public lr: number, public b1: number, public b2: number, public eps: number, public wd: number) {
    this.m = new Array(n).fill(0);
    this.v = new Array(n).fill(0);
  }
  step(p: number[], g: number[]): void {
    this.t++;
    const bc1 = 1 - this.b1 ** this.t, bc2 = 1 - this.b2 ** this.t;
    for (let i = 0; i < p.length; i++) {
      p[i]! *= 1 - this.lr * this.wd;
      this.m[i] = this.b1 * this.m[i]! + (1 - this.b1) * g[i]!;
      this.v[i] = this.b2 * this.v[i]! + (1 - this.b2) * g[i]! * g[i]!;
      const mhat = this.m[i]! / bc1, vhat = this.v[i]! / bc2;
      p[i]! -= this.lr * mhat / (Math.sqrt(vhat) + this.eps);
    }
  }
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) assert.fail(`${what}[${i}]: ${a} vs expected ${e}`);
  }
}

for (const [label, minNative] of [['native', 0], ['reference', Infinity]] as const) {
  test(`AdamW (${label}) matches the PyTorch formulas over 6 steps with two groups and an lr change`, () => {
    setNativeMinElements(minNative);
    try {
      const rng = new Rng(1);
      const ps = [param([3, 5], rng, 'float32', 'w'), param([37], rng, 'float32', 'b'), param([40, 33], rng, 'float32', 'big')];
      const opt = new AdamW(weightDecayGroups(ps, 0.1), { lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8 });
      const refs = ps.map((p) => new RefAdamW(p.size, 3e-3, 0.9, 0.95, 1e-8, p.ndim >= 2 ? 0.1 : 0));
      const vals = ps.map((p) => Array.from(p.data as Float32Array));
      for (let s = 0; s < 6; s++) {
        const lr = s < 3 ? 3e-3 : 1e-3;
        for (const g of opt.paramGroups) g.lr = lr;
        ps.forEach((p, i) => {
          setGrad(p, rng, 0.1 + s);
          refs[i]!.lr = lr;
          refs[i]!.step(vals[i]!, Array.from(p.grad!.data as Float32Array));
        });
        opt.step();
        ps.forEach((p, i) => assertClose(p.data as Float32Array, vals[i]!, 2e-5, 2e-6, `step ${s} ${p.name}`));
        // keep float32 rounding from drifting the reference away
        ps.forEach((p, i) => { vals[i] = Array.from(p.data as Float32Array); });
      }
      assert.equal(opt.stepCount, 6);
      assert.equal(opt.paramGroups[0]!.slots[0]!.step, 6);
    } finally {
      setNativeMinElements(64);
    }
  });
}

test('AdamW on float64 parameters matches the reference to 1e-12', () => {
  const rng = new Rng(2);
  const p = param([7, 9], rng, 'float64', 'w64');
  const opt = new AdamW([p], { lr: 1e-2, weightDecay: 0.05 });
  const ref = new RefAdamW(p.size, 1e-2, 0.9, 0.999, 1e-8, 0.05);
  const vals = Array.from(p.data as Float64Array);
  for (let s = 0; s < 5; s++) {
    setGrad(p, rng);
    ref.step(vals, Array.from(p.grad!.data as Float64Array));
    opt.step();
  }
  assertClose(p.data as Float64Array, vals, 1e-12, 1e-14, 'float64');
  assert.ok(opt.slots()[0]!.state.exp_avg instanceof Float64Array);
});

test('native AdamW kernel equals the TS reference kernel on sizes that are not multiples of 8', (t) => {
  const nat = requireNative(nativeOptim(), 'native optimizer kernels');
  if (!nat) { t.skip('native library not built'); return; }
  const rng = new Rng(3);
  for (const n of [1, 3, 7, 9, 15, 17, 31, 33, 1023, 40001, 100003]) {
    const p = new Float32Array(n), g = new Float32Array(n), m = new Float32Array(n), v = new Float32Array(n);
    rng.fillNormal(p); rng.fillNormal(g); rng.fillNormal(m, 0, 0.1);
    for (let i = 0; i < n; i++) v[i] = rng.uniform() * 0.01;
    const [p2, g2, m2, v2] = [p.slice(), g.slice(), m.slice(), v.slice()];
    const t7 = 7, b1 = 0.9, b2 = 0.95, lr = 1e-3, wd = 0.1, eps = 1e-8, gs = 0.37;
    const stepSize = lr / (1 - b1 ** t7), bc2Sqrt = Math.sqrt(1 - b2 ** t7);
    nat.adamw(p, g, m, v, n, 1 - lr * wd, b1, 1 - b1, b2, 1 - b2, eps, stepSize, bc2Sqrt, gs);
    adamwReference(p2, 0, g2, 0, m2, v2, n, { decay: 1 - lr * wd, beta1: b1, beta2: b2, eps, stepSize, bc2Sqrt, gradScale: gs });
    assertClose(m, m2, 1e-6, 1e-7, `m n=${n}`);
    assertClose(v, v2, 1e-6, 1e-9, `v n=${n}`);
    assertClose(p, p2, 1e-6, 1e-7, `p n=${n}`);
    assert.deepEqual(g, g2, 'the gradient is read-only');
  }
});

test('gradScale inside the step equals scaling the gradients first', () => {
  setNativeMinElements(0);
  try {
    const rngA = new Rng(4), rngB = new Rng(4);
    const a = param([1000], rngA), b = param([1000], rngB);
    const oa = new AdamW([a], { weightDecay: 0.1 }), ob = new AdamW([b], { weightDecay: 0.1 });
    for (let s = 0; s < 3; s++) {
      setGrad(a, rngA); setGrad(b, rngB);
      const gb = b.grad!.data as Float32Array;
      for (let i = 0; i < gb.length; i++) gb[i] = gb[i]! * 0.25;
      oa.step({ gradScale: 0.25 });
      ob.step();
    }
    assertClose(a.data as Float32Array, b.data as Float32Array, 1e-6, 1e-7, 'scaled');
  } finally {
    setNativeMinElements(64);
  }
});

function shardRun(ps: Tensor[], bounds: number[], grads: Float32Array[][], useGradViews: boolean): AdamW[] {
  const opts: AdamW[] = [];
  for (let r = 0; r + 1 < bounds.length; r++) {
    let segs: ParamSegment[] = shardSegments(ps, bounds[r]!, bounds[r + 1]!);
    if (useGradViews) {
      // this rank's flat "reduce-scattered" gradient shard; its segments view into it
      const flat = fromStorage(new Float32Array(bounds[r + 1]! - bounds[r]!), [bounds[r + 1]! - bounds[r]!], 'float32').keep();
      let off = 0;
      segs = segs.map((s) => {
        const view = flat.view([s.end - s.start], [1], off);
        off += s.end - s.start;
        return { ...s, grad: view };
      });
    }
    opts.push(new AdamW(segs, { lr: 1e-2, weightDecay: 0.1 }));
  }
  for (const g of grads) {
    ps.forEach((p, i) => { p.grad = fromStorage(g[i]!.slice(), p.shape, 'float32').keep(); });
    for (const o of opts) {
      if (useGradViews) {
        for (const s of o.slots()) {
          const src = g[ps.indexOf(s.param)]!;
          (s.grad!.data as Float32Array).set(src.subarray(s.start, s.end), s.grad!.offset);
          s.param.grad = null; // the optimizer must read the shard, not param.grad
        }
      }
      o.step();
    }
  }
  return opts;
}

test('ZeRO-1 segment updates equal the full update, with param.grad or flat gradient shards', () => {
  setNativeMinElements(0);
  try {
    const rng = new Rng(5);
    const shapes = [[17, 3], [5], [129], [64, 65]];
    const init = shapes.map((s) => param(s, rng));
    const grads = Array.from({ length: 4 }, () => init.map((p) => { const g = new Float32Array(p.size); rng.fillNormal(g); return g; }));
    const clone = () => init.map((p, i) => { const t = fromStorage((p.data as Float32Array).slice(), p.shape, 'float32').keep(); t.requiresGrad = true; t.name = `p${i}`; return t; });
    const full = clone();
    shardRun(full, [0, full.reduce((a, p) => a + p.size, 0)], grads, false);
    const total = init.reduce((a, p) => a + p.size, 0);
    for (const views of [false, true]) {
      const sharded = clone();
      const opts = shardRun(sharded, [0, 40, 51, 1000, total], grads, views);
      sharded.forEach((p, i) => assert.deepEqual(p.data, full[i]!.data, `param ${i} (grad views: ${views})`));
      // each rank holds state only for its range
      const held = opts.reduce((a, o) => a + o.slots().reduce((b, s) => b + s.state.exp_avg!.length, 0), 0);
      assert.equal(held, total);
      assert.equal(opts[1]!.slots().length, 1);
      assert.equal(opts[1]!.slots()[0]!.start, 40);
      assert.equal(opts[2]!.slots()[0]!.start, 0);
      assert.equal(opts[2]!.slots()[2]!.end, 1000 - 51 - 5 - 129);
    }
  } finally {
    setNativeMinElements(64);
  }
});

test('stateDict round trip resumes bit-exactly, and full state loads into a ZeRO shard', () => {
  setNativeMinElements(0);
  try {
    const rng = new Rng(6);
    const mk = () => { const r = new Rng(60); return [param([10, 10], r, 'float32', 'a'), param([33], r, 'float32', 'b')]; };
    const grads = Array.from({ length: 5 }, () => [100, 33].map((n) => { const g = new Float32Array(n); rng.fillNormal(g); return g; }));
    const feed = (ps: Tensor[], s: number) => ps.forEach((p, i) => { p.grad = fromStorage(grads[s]![i]!.slice(), p.shape, 'float32').keep(); });

    const ref = mk();
    const oRef = new AdamW(weightDecayGroups(ref, 0.1), { lr: 1e-2 });
    for (let s = 0; s < 5; s++) { feed(ref, s); oRef.step(); }

    const a = mk();
    const oA = new AdamW(weightDecayGroups(a, 0.1), { lr: 1e-2 });
    for (let s = 0; s < 3; s++) { feed(a, s); oA.step(); }
    const sd = oA.stateDict();
    assert.equal(sd.step, 3);
    assert.deepEqual(Object.keys(sd.state).sort(), ['a', 'b']);
    assert.equal(sd.state.a!.step, 3);
    assert.ok(sd.state.a!.buffers.exp_avg instanceof Float32Array);
    assert.deepEqual(sd.groups.map((g) => g.params), [['a'], ['b']]);
    sd.groups[0]!.lr = 1e-2; // (already) — groups carry hyperparameters
    const saved = a.map((p) => (p.data as Float32Array).slice());

    // a fresh full optimizer
    const b = mk();
    b.forEach((p, i) => (p.data as Float32Array).set(saved[i]!));
    const oB = new AdamW(weightDecayGroups(b, 0.1), { lr: 5 });
    oB.loadStateDict(sd);
    assert.equal(oB.paramGroups[0]!.lr, 1e-2);
    for (let s = 3; s < 5; s++) { feed(b, s); oB.step(); }
    b.forEach((p, i) => assert.deepEqual(p.data, ref[i]!.data, `resumed param ${i}`));

    // a ZeRO rank holding elements [50, 120) of the flat parameters loads the full state
    const c = mk();
    c.forEach((p, i) => (p.data as Float32Array).set(saved[i]!));
    const oC = new AdamW(weightDecayGroups(shardSegments(c, 50, 120), 0.1), { lr: 1e-2 });
    oC.loadStateDict(sd);
    for (let s = 3; s < 5; s++) { feed(c, s); oC.step(); }
    assert.deepEqual((c[0]!.data as Float32Array).subarray(50), (ref[0]!.data as Float32Array).subarray(50));
    assert.deepEqual((c[1]!.data as Float32Array).subarray(0, 20), (ref[1]!.data as Float32Array).subarray(0, 20));
    assert.deepEqual((c[0]!.data as Float32Array).subarray(0, 50), saved[0]!.subarray(0, 50), 'outside the shard nothing changes');

    // a shard state cannot be loaded into a wider range
    const d = mk();
    const oD = new AdamW(weightDecayGroups(d, 0.1));
    assert.throws(() => oD.loadStateDict(oC.stateDict()), /parameter 'a': saved range \[50, 100\) does not cover \[0, 100\)/);
  } finally {
    setNativeMinElements(64);
  }
});

test('zeroGrad keeps gradient buffers; bad parameters are refused with their names', () => {
  const rng = new Rng(7);
  const p = param([4, 4], rng, 'float32', 'w');
  setGrad(p, rng);
  const buf = p.grad!.data;
  const opt = new AdamW([p]);
  opt.zeroGrad();
  assert.equal(p.grad!.data, buf);
  assert.ok((buf as Float32Array).every((x) => x === 0));
  assert.throws(() => new AdamW([p, p]), /parameter 'w' appears twice/);
  assert.throws(() => new AdamW([{ param: p, start: 3, end: 17 }]), /'w': segment \[3, 17\) is outside \[0, 16\)/);
  assert.throws(() => new AdamW([p], { betas: [1, 0.9] }), /invalid beta1/);
  const i32 = fromStorage(new Int32Array(4), [4], 'int32');
  i32.name = 'ids';
  assert.throws(() => new AdamW([i32]), /'ids' has dtype int32/);
  // no grad: skipped, no state
  const q = param([3], rng, 'float32', 'q');
  const o2 = new AdamW([q]);
  o2.step();
  assert.equal(o2.slots()[0]!.step, 0);
  assert.deepEqual(o2.stateDict().state, {});
});
