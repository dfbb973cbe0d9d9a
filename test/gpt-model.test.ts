// GPT model variants: recomputation gives the same gradients; rotary positions and
// tied embeddings pass a finite-difference check in float64; sampling is seeded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPT } from '../src/nn/gpt.js';
import type { GptConfig } from '../src/nn/gpt-config.js';
import { fromStorage } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { generate } from '../src/nn/generate.js';
import { nameParameters } from '../src/train/optim-setup.js';

const base: GptConfig = { nLayer: 2, nHead: 2, dModel: 16, dFF: 32, vocabSize: 40, seqLen: 8, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5 };
const B = 2, T = 8;
const idx = Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % 40);
const tgt = Int32Array.from({ length: B * T }, (_, i) => (i * 5 + 1) % 40);

function lossOf(m: GPT, dtype: 'float32' | 'float64' = 'float32'): number {
  void dtype;
  return scope(() => m.loss(fromStorage(idx, [B, T], 'int32'), fromStorage(tgt, [B, T], 'int32')).item());
}

test('recomputation (with dropout) gives the same loss and gradients as keeping activations', () => {
  const cfg = { ...base, dropout: 0.1 };
  const grads = (recompute: boolean) => {
    const m = new GPT(cfg, { seed: 5, recompute });
    const loss = scope(() => {
      const l = m.loss(fromStorage(idx, [B, T], 'int32'), fromStorage(tgt, [B, T], 'int32'));
      backward(l);
      return l.item();
    });
    return { loss, g: nameParameters(m).map(([n, p]) => [n, p.grad!.toArray()] as const) };
  };
  const a = grads(false), b = grads(true);
  assert.equal(a.loss, b.loss);
  for (let i = 0; i < a.g.length; i++) {
    const [n, ga] = a.g[i]!, gb = b.g[i]![1];
    let worst = 0, scale = 0;
    for (let j = 0; j < ga.length; j++) { worst = Math.max(worst, Math.abs(ga[j]! - gb[j]!)); scale = Math.max(scale, Math.abs(ga[j]!)); }
    assert.ok(worst <= 1e-6 * Math.max(scale, 1e-6), `${n}: max diff ${worst} (scale ${scale})`);
  }
});

test('rotary positions and tied embeddings: gradients match central differences (float64)', () => {
  const m = new GPT({ ...base, positions: 'rotary', tieEmbeddings: true }, { seed: 2, dtype: 'float64' });
  assert.equal(m.wpe, null);
  assert.equal(m.lm_head.weight, m.wte.weight);
  scope(() => backward(m.loss(fromStorage(idx, [B, T], 'int32'), fromStorage(tgt, [B, T], 'int32'))));
  const eps = 1e-6;
  for (const [name, p] of nameParameters(m)) {
    const d = p.data as Float64Array, g = p.grad!.data as Float64Array;
    for (const j of [0, Math.floor(p.size / 3), p.size - 1]) {
      const old = d[j]!;
      d[j] = old + eps;
      const lp = noGrad(() => lossOf(m));
      d[j] = old - eps;
      const lm = noGrad(() => lossOf(m));
      d[j] = old;
      const num = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(num - g[j]!) <= 1e-6 + 1e-5 * Math.abs(num), `${name}[${j}]: numeric ${num} vs analytic ${g[j]}`);
    }
  }
});

test('sampling is deterministic for a seed and respects top-k = 1 (greedy)', () => {
  const m = new GPT(base, { seed: 9 });
  const a = generate(m, [1, 2, 3], { maxNewTokens: 12, temperature: 0.9, topK: 5, seed: 4 });
  const b = generate(m, [1, 2, 3], { maxNewTokens: 12, temperature: 0.9, topK: 5, seed: 4 });
  assert.deepEqual(a, b);
  assert.equal(a.length, 12);
  const greedy = generate(m, [1, 2, 3], { maxNewTokens: 5, temperature: 1, topK: 1, seed: 1 });
  assert.deepEqual(greedy, generate(m, [1, 2, 3], { maxNewTokens: 5, temperature: 0, seed: 2 }));
});
