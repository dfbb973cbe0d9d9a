// DLRM forward against a hand-written reference, backward against finite differences
// (float64), BCE against its closed form, and the AUC function against brute force.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backward, noGrad } from '../src/autograd/tape.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { Rng } from '../src/core/rng.js';
import { DLRM, bceWithLogits, embeddingBag, rowsLeaf } from '../src/recsys/dlrm.js';
import { aucBruteForce, aucExact, logLoss } from '../src/recsys/metrics.js';

const B = 4, J = 3, F = 3, D = 4;
const offsets2 = Int32Array.from([0, 2, 3, 3, 6]); // field 2 is multi-hot: bags of 2, 1, 0, 3 ids

function setup(pooling: 'sum' | 'mean' = 'sum') {
  const model = new DLRM({ numDense: J, numSparse: F, embDim: D, bottom: [5], top: [6], seed: 3, dtype: 'float64', pooling });
  const rng = new Rng(9);
  // Larger-than-init weights so ReLUs and the interaction matter.
  for (const p of model.parameters()) rng.fillNormal(p.data as Float64Array, 0, 0.5);
  const dense = new Float64Array(B * J); rng.fillNormal(dense);
  const rows = [new Float64Array(B * D), new Float64Array(B * D), new Float64Array(6 * D)];
  for (const r of rows) rng.fillNormal(r, 0, 0.7);
  const labels = Float32Array.from([1, 0, 1, 0]);
  return { model, dense, rows, labels, pooling };
}

function lossOf(s: ReturnType<typeof setup>, leaves: Tensor[]): Tensor {
  const emb = leaves.map((l, f) => embeddingBag(l, f === 2 ? offsets2 : undefined, B, s.pooling));
  return bceWithLogits(s.model.forward(fromStorage(s.dense, [B, J], 'float64'), emb), s.labels);
}

/** Plain-loop DLRM: the definition the model must match. */
function referenceLogits(s: ReturnType<typeof setup>): number[] {
  const lin = (x: number[], w: Float64Array, b: Float64Array, nin: number, nout: number): number[] =>
    Array.from({ length: nout }, (_, o) => { let a = b[o]!; for (let i = 0; i < nin; i++) a += w[o * nin + i]! * x[i]!; return a; });
  const P = (n: string): Float64Array => s.model.stateDict().get(n)!.data as Float64Array;
  const out: number[] = [];
  for (let b = 0; b < B; b++) {
    let x = Array.from(s.dense.subarray(b * J, b * J + J));
    x = lin(x, P('bot.0.weight'), P('bot.0.bias'), J, 5).map((v) => Math.max(v, 0));
    x = lin(x, P('bot.1.weight'), P('bot.1.bias'), 5, D).map((v) => Math.max(v, 0));
    const z: number[][] = [x];
    for (let f = 0; f < F; f++) {
      const e = new Array<number>(D).fill(0);
      const [lo, hi] = f === 2 ? [offsets2[b]!, offsets2[b + 1]!] : [b, b + 1];
      for (let i = lo; i < hi; i++) for (let d = 0; d < D; d++) e[d] += s.rows[f]![i * D + d]! / (s.pooling === 'mean' ? hi - lo : 1);
      z.push(e);
    }
    const h = [...x];
    for (let i = 0; i < z.length; i++) for (let j = i + 1; j < z.length; j++) h.push(z[i]!.reduce((a, v, d) => a + v * z[j]![d]!, 0));
    const t = lin(h, P('top.0.weight'), P('top.0.bias'), D + 6, 6).map((v) => Math.max(v, 0));
    out.push(lin(t, P('top.1.weight'), P('top.1.bias'), 6, 1)[0]!);
  }
  return out;
}

for (const pooling of ['sum', 'mean'] as const) {
  test(`DLRM forward matches the reference loops (${pooling} pooling), BCE matches its closed form`, () => {
    const s = setup(pooling);
    scope(() => {
      const leaves = s.rows.map((r) => fromStorage(r, [r.length / D, D], 'float64'));
      const emb = leaves.map((l, f) => embeddingBag(l, f === 2 ? offsets2 : undefined, B, pooling));
      const logits = s.model.forward(fromStorage(s.dense, [B, J], 'float64'), emb);
      const ref = referenceLogits(s);
      for (let b = 0; b < B; b++) assert.ok(Math.abs(logits.data[b]! - ref[b]!) < 1e-12, `logit ${b}: ${logits.data[b]} vs ${ref[b]}`);
      const loss = bceWithLogits(logits, s.labels).item();
      assert.ok(Math.abs(loss - logLoss(ref, s.labels)) < 1e-12);
    });
  });
}

test('DLRM backward matches central finite differences (float64): parameters and embedding rows', () => {
  const s = setup('mean');
  scope(() => {
    const leaves = s.rows.map((r) => rowsLeaf(r, r.length / D, D));
    backward(lossOf(s, leaves));
    const probe = (): number => noGrad(() => scope(() => lossOf(s, s.rows.map((r) => fromStorage(r, [r.length / D, D], 'float64'))).item()));
    const check = (name: string, data: Float64Array, grad: Float64Array, picks: number[]): void => {
      for (const i of picks) {
        const old = data[i]!, eps = 1e-6;
        data[i] = old + eps; const lp = probe();
        data[i] = old - eps; const lm = probe();
        data[i] = old;
        const num = (lp - lm) / (2 * eps);
        assert.ok(Math.abs(num - grad[i]!) <= 1e-6 * Math.max(1, Math.abs(num)), `${name}[${i}]: analytic ${grad[i]} vs numeric ${num}`);
      }
    };
    let checked = 0;
    for (const [n, p] of s.model.namedParameters()) {
      assert.ok(p.grad, `${n} got no gradient`);
      const picks = Array.from({ length: Math.min(6, p.size) }, (_, i) => Math.floor((i * p.size) / Math.min(6, p.size)));
      check(n, p.data as Float64Array, p.grad.data as Float64Array, picks);
      checked += picks.length;
    }
    leaves.forEach((l, f) => {
      assert.ok(l.grad, `rows of field ${f} got no gradient`);
      check(`rows${f}`, s.rows[f]!, l.grad.data as Float64Array, Array.from({ length: s.rows[f]!.length }, (_, i) => i));
      checked += s.rows[f]!.length;
    });
    assert.ok(checked > 60);
  });
});

test('aucExact equals the brute-force pair count, ties included', () => {
  const rng = new Rng(5);
  for (let trial = 0; trial < 20; trial++) {
    const n = 5 + rng.int(200);
    const scores = Array.from({ length: n }, () => (trial % 3 === 0 ? rng.int(5) : rng.normal())); // many ties in every third trial
    const labels = Array.from({ length: n }, (_, i) => (rng.uniform() < 0.3 || i === 0 ? 1 : 0));
    labels[1] = 0;
    assert.ok(Math.abs(aucExact(scores, labels) - aucBruteForce(scores, labels)) < 1e-12);
  }
  assert.equal(aucExact([0.1, 0.9], [0, 1]), 1);
  assert.equal(aucExact([0.5, 0.5], [0, 1]), 0.5);
  assert.ok(Number.isNaN(aucExact([1, 2], [1, 1])));
});
