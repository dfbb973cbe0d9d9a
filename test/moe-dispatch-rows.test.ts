// The dispatched rows of an MoE layer are held at a fixed row count (nn/moe.ts): with dropped
// assignments (capacity, SWIPE) the rows actually dispatched change every step, and every
// buffer sized by them (xp, the combine exchange's output under expert parallelism, their
// gradients) would be a fresh allocation each step. The padding rows are zero and change nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { moeDispatch } from '../src/ops/moe.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';
import { sum, mul } from '../src/ops/index.js';
import { Rng } from '../src/core/rng.js';
import { GPT } from '../src/nn/gpt.js';
import { presetConfig } from '../src/train/config.js';
import { groupCapacity } from '../src/nn/moe-config.js';

const rand = (n: number, seed: number): Float32Array => { const r = new Rng(seed); return Float32Array.from({ length: n }, () => r.normal()); };

test('moeDispatch(x, src, rows): rows past the dispatched ones are zero, the gradient equals the unpadded one, rows < S is refused', () => {
  const N = 6, C = 5, src = Int32Array.from([4, 0, 2, 2, 5]);
  const mk = (): Tensor => { const x = fromStorage(rand(N * C, 1), [N, C], 'float32'); x.requiresGrad = true; return x; };
  const x1 = mk(), x2 = mk();
  const a = moeDispatch(x1, src), b = moeDispatch(x2, src, 8);
  assert.deepEqual(b.shape, [8, C]);
  const bd = b.data as Float32Array;
  assert.deepEqual(Array.from(bd.subarray(b.offset, b.offset + src.length * C)), Array.from((a.data as Float32Array).subarray(a.offset, a.offset + src.length * C)));
  assert.ok(bd.subarray(b.offset + src.length * C, b.offset + 8 * C).every((v) => v === 0));
  const w = rand(8 * C, 2);
  backward(sum(mul(a, fromStorage(w.slice(0, src.length * C), [src.length, C], 'float32'))));
  backward(sum(mul(b, fromStorage(w, [8, C], 'float32'))));
  assert.deepEqual(Array.from(x2.grad!.data as Float32Array), Array.from(x1.grad!.data as Float32Array));
  assert.throws(() => moeDispatch(mk(), src, 4), /rows \(4\) must be an integer >= the 5 dispatched rows/);
});

test('MoE layer: the dispatched rows keep one size whatever the routing drops (min of N·K and every expert\'s capacity)', () => {
  for (const cf of [1, 0.5, 0]) {
    const cfg = presetConfig('moe-tiny').model;
    const model = new GPT({ ...cfg, nLayer: 2, nHead: 2, dModel: 16, dFF: 32, vocabSize: 64, seqLen: 16, moe: { ...cfg.moe!, dFF: 16, capacityFactor: cf } }, { seed: 1 });
    const m = model.moeLayers()[0]!;
    const B = 3, T = 16, { experts: E, topK: K } = m.cfg;
    const rows: number[] = [], sent: number[] = [];
    m.expertRunner = (xp, counts, local) => { rows.push(xp.shape[0]!); sent.push(counts.reduce((s, c) => s + c, 0)); return local(xp, counts); };
    const rng = new Rng(7);
    for (let i = 0; i < 4; i++) model.forward(fromStorage(Int32Array.from({ length: B * T }, () => rng.int(64)), [B, T], 'int32'));
    const bound = Math.min(B * T * K, B * E * groupCapacity(m.cfg, T));
    assert.deepEqual(rows, [bound, bound, bound, bound], `cf=${cf}`);
    assert.ok(sent.every((s) => s <= bound), `cf=${cf}: ${sent}`);
    if (cf === 0) assert.ok(sent.every((s) => s === bound), 'dropless dispatches every assignment: no padding');
  }
});
