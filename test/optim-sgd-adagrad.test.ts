// SGD and Adagrad against independent per-element references of the PyTorch formulas.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { SGD, Adagrad, shardSegments } from '../src/optim/index.js';

function param(n: number, rng: Rng, dtype: 'float32' | 'float64', name: string): Tensor {
  const d = dtype === 'float32' ? new Float32Array(n) : new Float64Array(n);
  rng.fillNormal(d);
  const t = fromStorage(d, [n], dtype).keep();
  t.requiresGrad = true;
  t.name = name;
  return t;
}

function assertClose(a: ArrayLike<number>, e: ArrayLike<number>, rtol: number, what: string): void {
  for (let i = 0; i < e.length; i++) {
    if (!(Math.abs(a[i]! - e[i]!) <= 1e-7 + rtol * Math.abs(e[i]!))) assert.fail(`${what}[${i}]: ${a[i]} vs expected ${e[i]}`);
  }
}

interface SgdCfg { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean }

/** torch.optim.SGD._single_tensor_sgd, one element list. */
function refSgd(p: number[], g: number[], buf: number[] | null, c: SgdCfg): number[] | null {
  const d = g.map((gi, i) => gi + c.weightDecay * p[i]!);
  let upd = d;
  if (c.momentum !== 0) {
    buf = buf === null ? [...d] : buf.map((b, i) => c.momentum * b + (1 - c.dampening) * d[i]!);
    upd = c.nesterov ? d.map((di, i) => di + c.momentum * buf![i]!) : buf;
  }
  for (let i = 0; i < p.length; i++) p[i]! -= c.lr * upd[i]!;
  return buf;
}

const SGD_CASES: SgdCfg[] = [
  { lr: 0.1, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
  { lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 1e-2, nesterov: false },
  { lr: 0.05, momentum: 0.9, dampening: 0.3, weightDecay: 0, nesterov: false },
  { lr: 0.05, momentum: 0.8, dampening: 0, weightDecay: 1e-3, nesterov: true },
];

for (const dtype of ['float32', 'float64'] as const) {
  for (const [label, minNative] of [['native', 0], ['reference', Infinity]] as const) {
    if (dtype === 'float64' && label === 'native') continue;
    test(`SGD ${dtype} (${label}) matches PyTorch's formulas: momentum, dampening, nesterov, weight decay`, () => {
      setNativeMinElements(minNative);
      try {
        for (const c of SGD_CASES) {
          const rng = new Rng(11);
          const p = param(101, rng, dtype, 'p');
          const opt = new SGD([p], c);
          const vals = Array.from(p.data);
          let buf: number[] | null = null;
          for (let s = 0; s < 5; s++) {
            const g = dtype === 'float32' ? new Float32Array(101) : new Float64Array(101);
            rng.fillNormal(g);
            p.grad = fromStorage(g, [101], dtype).keep();
            buf = refSgd(vals, Array.from(g), buf, c);
            opt.step();
            assertClose(p.data, vals, dtype === 'float32' ? 1e-5 : 1e-13, `${JSON.stringify(c)} step ${s}`);
            if (dtype === 'float32') vals.splice(0, vals.length, ...Array.from(p.data));
          }
          assert.equal(Object.keys(opt.slots()[0]!.state).length, c.momentum !== 0 ? 1 : 0);
        }
      } finally {
        setNativeMinElements(64);
      }
    });
  }
}

test('SGD refuses nesterov without momentum (PyTorch check)', () => {
  const p = param(3, new Rng(1), 'float32', 'p');
  assert.throws(() => new SGD([p], { nesterov: true }), /nesterov/);
});

interface AdagradCfg { lr: number; lrDecay: number; weightDecay: number; initialAccumulatorValue: number; eps: number }

/** torch.optim.Adagrad._single_tensor_adagrad. */
function refAdagrad(p: number[], g: number[], sum: number[], step: number, c: AdagradCfg): void {
  const clr = c.lr / (1 + (step - 1) * c.lrDecay);
  for (let i = 0; i < p.length; i++) {
    const d = g[i]! + c.weightDecay * p[i]!;
    sum[i]! += d * d;
    p[i]! -= clr * d / (Math.sqrt(sum[i]!) + c.eps);
  }
}

const ADAGRAD_CASES: AdagradCfg[] = [
  { lr: 0.1, lrDecay: 0, weightDecay: 0, initialAccumulatorValue: 0, eps: 1e-10 },
  { lr: 0.1, lrDecay: 0.05, weightDecay: 1e-2, initialAccumulatorValue: 0.1, eps: 1e-6 },
];

for (const dtype of ['float32', 'float64'] as const) {
  for (const [label, minNative] of [['native', 0], ['reference', Infinity]] as const) {
    if (dtype === 'float64' && label === 'native') continue;
    test(`Adagrad ${dtype} (${label}) matches PyTorch's formulas: lr decay, initial accumulator, weight decay`, () => {
      setNativeMinElements(minNative);
      try {
        for (const c of ADAGRAD_CASES) {
          const rng = new Rng(12);
          const p = param(77, rng, dtype, 'p');
          const opt = new Adagrad([p], c);
          const vals = Array.from(p.data);
          const sum = new Array(77).fill(c.initialAccumulatorValue);
          for (let s = 1; s <= 5; s++) {
            const g = dtype === 'float32' ? new Float32Array(77) : new Float64Array(77);
            rng.fillNormal(g);
            p.grad = fromStorage(g, [77], dtype).keep();
            refAdagrad(vals, Array.from(g), sum, s, c);
            opt.step();
            assertClose(p.data, vals, dtype === 'float32' ? 1e-5 : 1e-13, `${JSON.stringify(c)} step ${s}`);
            if (dtype === 'float32') vals.splice(0, vals.length, ...Array.from(p.data));
          }
        }
      } finally {
        setNativeMinElements(64);
      }
    });
  }
}

test('SGD and Adagrad: sharded segments equal the full update; state dicts round-trip', () => {
  setNativeMinElements(0);
  try {
    for (const make of [
      (ps: Parameters<typeof shardSegments>[0] | ReturnType<typeof shardSegments>) => new SGD(ps, { lr: 0.1, momentum: 0.9, weightDecay: 0.01 }),
      (ps: Parameters<typeof shardSegments>[0] | ReturnType<typeof shardSegments>) => new Adagrad(ps, { lr: 0.1, lrDecay: 0.01, initialAccumulatorValue: 0.1 }),
    ]) {
      const rng = new Rng(13);
      const init = [param(70, rng, 'float32', 'a'), param(50, rng, 'float32', 'b')];
      const grads = Array.from({ length: 4 }, () => [70, 50].map((n) => { const g = new Float32Array(n); rng.fillNormal(g); return g; }));
      const clone = () => init.map((p) => { const t = fromStorage((p.data as Float32Array).slice(), p.shape, 'float32').keep(); t.name = p.name!; return t; });
      const feed = (ps: Tensor[], s: number) => ps.forEach((p, i) => { p.grad = fromStorage(grads[s]![i]!.slice(), p.shape, 'float32').keep(); });
      const full = clone();
      const of = make(full);
      for (let s = 0; s < 4; s++) { feed(full, s); of.step(); }
      const sh = clone();
      const o1 = make(shardSegments(sh, 0, 90)), o2 = make(shardSegments(sh, 90, 120));
      for (let s = 0; s < 2; s++) { feed(sh, s); o1.step(); o2.step(); }
      const sd1 = o1.stateDict(), sd2 = o2.stateDict();
      const r1 = make(shardSegments(sh, 0, 90)), r2 = make(shardSegments(sh, 90, 120));
      r1.loadStateDict(sd1); r2.loadStateDict(sd2);
      for (let s = 2; s < 4; s++) { feed(sh, s); r1.step(); r2.step(); }
      sh.forEach((p, i) => assert.deepEqual(p.data, full[i]!.data, `${of.constructor.name} param ${i}`));
    }
  } finally {
    setNativeMinElements(64);
  }
});
