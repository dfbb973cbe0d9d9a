// The single-process training loop: resume equivalence (bit for bit), NaN/Inf skipping
// and the stop after repeated failures, validation, and preset parameter counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { train } from '../src/train/trainer.js';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { parseArgs } from '../src/train/overrides.js';
import { PRESETS, presetConfig } from '../src/train/config.js';
import { GPT } from '../src/nn/gpt.js';
import { gptParamCount } from '../src/nn/gpt-config.js';
import { asGpt, type TrainModel } from '../src/train/parallel-layer.js';
import { tinyData, tinyArgs, tmp, runCli, stepLosses } from './helpers/train-fixture.js';

async function cfgFor(out: string, extra: string[] = []) {
  const data = await tinyData();
  return configFromArgs(parseArgs([...tinyArgs(data, out), ...extra]).flags);
}

test('a run killed mid-way resumes to the same losses as an uninterrupted run, bit for bit', async () => {
  // Long enough (120 steps, a checkpoint every 4) that the kill lands mid-run.
  const data = await tinyData();
  const long = ['--train.steps=120', '--train.evalEvery=40'];
  const a = tmp('straight'), b = tmp('resumed');
  const straight = await train(await cfgFor(a, long), { quiet: true });
  let killed = false;
  const r = await runCli(['train', ...tinyArgs(data, b), ...long], {
    onLine: (line, child) => {
      if (!killed && /step 4: checkpoint/.test(line)) { killed = true; child.kill('SIGKILL'); }
    },
  });
  assert.ok(killed && r.signal === 'SIGKILL', `the run was not killed mid-way:\n${r.out}`);
  assert.ok(existsSync(join(b, 'checkpoints', 'latest')));
  const rest = await train(await cfgFor(b, long), { quiet: true, resume: true });
  assert.ok(rest.losses.length > 0 && rest.losses.length <= 116, `resumed for ${rest.losses.length} steps`);
  const resumed = stepLosses(b);
  const steps = Array.from({ length: 120 }, (_, i) => i + 1);
  assert.deepEqual([...resumed.keys()].sort((x, y) => x - y), steps);
  assert.deepEqual(steps.map((s) => resumed.get(s)), straight.losses);
  assert.deepEqual(rest.valLosses.at(-1), straight.valLosses.at(-1));
});

test('non-finite gradients skip the step, and repeated failures stop the run', async () => {
  const out = tmp('nan');
  const poison = (steps: number[]) => (model: TrainModel, step: number) => {
    if (steps.includes(step)) asGpt(model).h[0]!.mlp.c_fc.weight.grad!.data[0] = NaN;
  };
  const r = await train(await cfgFor(out), { quiet: true, afterBackward: poison([3]) });
  assert.deepEqual(r.skippedSteps, [3]);
  assert.equal(r.steps, 8);
  assert.ok(r.losses.every(Number.isFinite));
  await assert.rejects(
    train(await cfgFor(tmp('nan2'), ['--train.maxBadSteps=3']), { quiet: true, afterBackward: poison([2, 3, 4, 5]) }),
    /3 consecutive steps with non-finite loss or gradients/,
  );
});

test('training lowers validation loss on the tiny corpus', async () => {
  const r = await train(await cfgFor(tmp('learn'), ['--train.steps=30', '--train.evalEvery=10', '--optim.lr=3e-3']), { quiet: true });
  const first = r.valLosses[0]!.loss, last = r.valLosses.at(-1)!.loss;
  assert.ok(last < first - 0.15, `validation loss ${first} → ${last}`);
});

test('preset parameter counts: meta-device model equals the closed form; gpt-small is 21,130,240', () => {
  for (const name of Object.keys(PRESETS)) {
    const cfg = presetConfig(name);
    const meta = new GPT(cfg.model, { device: 'meta' });
    assert.equal(meta.numParameters(), gptParamCount(cfg.model), name);
  }
  assert.equal(gptParamCount(presetConfig('gpt-small').model), 21_130_240);
  const tied = { ...presetConfig('gpt2-124m').model };
  assert.equal(gptParamCount(tied), 124_439_808);
});
