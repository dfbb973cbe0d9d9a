// Golden test of train.precision = bf16 against PyTorch autocast bf16 (tools/gen-golden-autocast.py
// wrote the file): logits, loss and every parameter gradient of a small GPT.
// Both sides run the GEMMs on bf16 operands with fp32 accumulation, but autocast also
// rounds each GEMM's output to bf16 while Athanor keeps it fp32, so the two differ by a
// few bf16 roundings. Per tensor, max |athanor − autocast| / max |autocast| must be
// ≤ 3e-2 (about 8 bf16 ulps of the largest element), and Athanor's distance from
// PyTorch's fp32 result must be no larger than twice autocast's own distance from it
// (a bf16 run that is wrong, not just rounded, is far from both).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPT } from '../src/nn/gpt.js';
import { scope } from '../src/core/scope.js';
import { backward } from '../src/autograd/tape.js';
import { nameParameters } from '../src/train/optim-setup.js';
import { withPrecision } from '../src/backend/precision.js';
import { markWeightsUpdated } from '../src/backend/lowp-tensor.js';
import { goldenFile, relDiff } from './helpers/golden.js';

const TOL = 3e-2;
const gold = goldenFile('gpt-autocast-bf16.safetensors');
const g = (k: string): number[] => gold(k).toArray();

test('golden: bf16 forward and backward match PyTorch autocast bf16', () => {
  const model = new GPT({ nLayer: 2, nHead: 2, dModel: 32, dFF: 64, vocabSize: 64, seqLen: 16, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5 });
  const named = nameParameters(model);
  for (const [n, p] of named) p.data.set(gold(`param.${n}`).data as Float32Array);
  markWeightsUpdated();
  const idx = gold('input.idx'), targets = gold('input.targets');
  const report: string[] = [];
  const check = (what: string, mine: number[], key: string) => {
    const vsAutocast = relDiff(mine, g(`bf16.${key}`));
    const mineVsF32 = relDiff(mine, g(`fp32.${key}`)), autocastVsF32 = relDiff(g(`bf16.${key}`), g(`fp32.${key}`));
    report.push(`${what}: vs autocast ${vsAutocast.toExponential(2)}, vs fp32 ${mineVsF32.toExponential(2)} (autocast vs fp32 ${autocastVsF32.toExponential(2)})`);
    assert.ok(vsAutocast <= TOL, `${what}: ${vsAutocast} from autocast`);
    assert.ok(mineVsF32 <= 2 * autocastVsF32 + 1e-6, `${what}: ${mineVsF32} from fp32, autocast is ${autocastVsF32}`);
  };
  withPrecision('bf16', () => scope(() => {
    const logits = model.forward(idx);
    check('logits', logits.toArray(), 'logits');
    const loss = model.loss(idx, targets);
    check('loss', [loss.item()], 'loss');
    backward(loss);
  }));
  for (const [n, p] of named) check(`grad.${n}`, p.grad!.toArray(), `grad.${n}`);
  console.log(`bf16 vs PyTorch autocast bf16 (max |diff| / max |ref|, tolerance ${TOL}):\n  ${report.join('\n  ')}`);
});
