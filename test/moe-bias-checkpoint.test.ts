// balance = bias: the routing biases are part of how the model routes, so loading a
// checkpoint for evaluation or generation (loadForInference) must restore them: the
// validation loss of the loaded model equals the one the trainer logged at its last step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { parseArgs } from '../src/train/overrides.js';
import { evaluate, train } from '../src/train/trainer.js';
import { loadForInference } from '../src/train/train-checkpoint.js';
import { openIndexedDataset } from '../src/data/indexed-dataset-reader.js';
import { tinyData, tinyArgs, tmp } from './helpers/train-fixture.js';

test('loadForInference restores the bias balancing\'s routing biases: its validation loss is the trained one', async () => {
  const data = await tinyData();
  const out = tmp('moe-bias-ckpt');
  const cfg = configFromArgs(parseArgs([...tinyArgs(data, out), '--model.moe.experts=4', '--model.moe.every=1', '--model.moe.dFF=64',
    '--model.moe.balance=bias', '--model.moe.biasRate=2', '--train.steps=6', '--train.evalEvery=6', '--optim.lr=3e-3']).flags);
  const r = await train(cfg, { quiet: true });
  const { model, config } = loadForInference(out);
  const biases = model.moeLayers().map((m) => Array.from(m.routingBias!));
  assert.ok(biases.every((b) => b.some((v) => v !== 0)), `the biases moved in training and were loaded: ${JSON.stringify(biases)}`);
  const val = openIndexedDataset(join(data, 'val'));
  assert.equal(evaluate(model, val, config), r.valLosses.at(-1)!.loss);
  // and they matter: with the biases zeroed the same checkpoint routes (and scores) differently
  for (const m of model.moeLayers()) m.routingBias!.fill(0);
  assert.notEqual(evaluate(model, val, config), r.valLosses.at(-1)!.loss);
});
