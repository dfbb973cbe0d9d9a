// Golden test against PyTorch (tools/gen-golden.py wrote the file): the tiny GPT's
// logits, loss, every parameter gradient and 10 AdamW steps. Per tensor we report
// max |athanor - torch| / max |torch| and require it ≤ 1e-6 for logits, loss and
// gradients (measured ≤ 4e-7: float32 rounding only) and ≤ 1e-5 for parameters after
// 10 AdamW steps (measured ≤ 2.3e-6: Adam divides by sqrt(v) + eps, which magnifies
// rounding in near-zero gradients such as the output-projection biases).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPT } from '../src/nn/gpt.js';
import { scope } from '../src/core/scope.js';
import { backward } from '../src/autograd/tape.js';
import type { Tensor } from '../src/core/tensor.js';
import { nameParameters, newAdamW } from '../src/train/optim-setup.js';
import { goldenFile, relDiff } from './helpers/golden.js';

const TOL = 1e-6;
const TOL_ADAM = 1e-5;
const g = goldenFile('tiny-gpt.safetensors');

function build(): { model: GPT; named: [string, Tensor][] } {
  const model = new GPT({ nLayer: 2, nHead: 2, dModel: 16, dFF: 64, vocabSize: 64, seqLen: 8, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5 });
  const named = nameParameters(model);
  for (const [n, p] of named) p.data.set(g(`param.${n}`).data as Float32Array);
  return { model, named };
}

const idx = g('input.idx'), targets = g('input.targets');
const report: string[] = [];

test('golden: logits and loss match PyTorch', () => {
  const { model } = build();
  scope(() => {
    const logits = model.forward(idx);
    const d = relDiff(logits.toArray(), g('out.logits').toArray());
    report.push(`out.logits ${d.toExponential(2)}`);
    assert.ok(d <= TOL, `logits rel diff ${d}`);
    const loss = model.loss(idx, targets).item();
    const dl = Math.abs(loss - g('out.loss').toArray()[0]!) / Math.abs(g('out.loss').toArray()[0]!);
    report.push(`out.loss ${dl.toExponential(2)}`);
    assert.ok(dl <= TOL, `loss rel diff ${dl}`);
  });
});

test('golden: every parameter gradient matches PyTorch', () => {
  const { model, named } = build();
  scope(() => { backward(model.loss(idx, targets)); });
  for (const [n, p] of named) {
    assert.ok(p.grad, `${n} has no gradient`);
    const d = relDiff(p.grad.toArray(), g(`grad.${n}`).toArray());
    report.push(`grad.${n} ${d.toExponential(2)}`);
    assert.ok(d <= TOL, `grad.${n} rel diff ${d}`);
  }
});

test('golden: 10 AdamW steps match PyTorch', () => {
  const { model, named } = build();
  const opt = newAdamW(named.map(([, p]) => p), { lr: 1e-3, minLr: 0, warmupSteps: 0, schedule: 'constant', weightDecay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradClip: 0 });
  const losses: number[] = [];
  for (let s = 0; s < 10; s++) {
    losses.push(scope(() => {
      const l = model.loss(idx, targets);
      backward(l);
      return l.item();
    }));
    opt.step();
    opt.zeroGrad();
  }
  const d = relDiff(losses, g('adamw.losses').toArray());
  report.push(`adamw.losses ${d.toExponential(2)}`);
  assert.ok(d <= TOL, `AdamW losses rel diff ${d}: ${losses}`);
  for (const [n, p] of named) {
    let mine = p.toArray(), theirs = g(`param_after.${n}`).toArray();
    if (n.endsWith('attn.c_attn.bias')) {
      // The key bias has an exactly-zero true gradient (softmax is invariant to adding
      // q·b_k to every score of a row); both frameworks see ~1e-12 rounding noise there,
      // which Adam normalises to ±lr steps. Compare q and v biases; bound the k part.
      const C = 16;
      for (let i = C; i < 2 * C; i++) assert.ok(Math.abs(mine[i]!) <= 10 * 1e-3 + 1e-6, `${n}[${i}] moved more than 10 Adam steps`);
      mine = [...mine.slice(0, C), ...mine.slice(2 * C)];
      theirs = [...theirs.slice(0, C), ...theirs.slice(2 * C)];
    }
    const dp = relDiff(mine, theirs);
    report.push(`param_after.${n} ${dp.toExponential(2)}`);
    assert.ok(dp <= TOL_ADAM, `param_after.${n} rel diff ${dp}`);
  }
});

test('golden: report', () => {
  console.log(`max relative difference per tensor (tolerance ${TOL}, ${TOL_ADAM} after AdamW):\n  ${report.join('\n  ')}`);
});
