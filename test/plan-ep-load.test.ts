// The planner's expert-parallel routing load (layout epLoad, plan/ep-terms.ts): the busiest
// ep rank receives epLoad× its balanced rows, so its row capacity, expert GEMMs, activation
// and exchanges grow with it; and the bench's measurement of it (plan/ep-routing-load.ts),
// the run's routing reproduced in one process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { presetConfig } from '../src/train/config.js';
import type { GptConfig } from '../src/nn/gpt-config.js';
import type { MoeConfig } from '../src/nn/moe-config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate, estimateMemory } from '../src/plan/estimate.js';
import { epRowTerms } from '../src/plan/ep-terms.js';
import { capacityRows } from '../src/parallel/expert-parallel-capacity.js';
import { parseLayout, layoutProblem, layoutString } from '../src/plan/layout.js';
import { loadCluster } from '../src/plan/cluster.js';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { Rng } from '../src/core/rng.js';
import { epRoutingLoad } from '../src/plan/ep-routing-load.js';
import { runCli } from './helpers/train-fixture.js';

const moeTiny = (): GptConfig & { moe: MoeConfig } => presetConfig('moe-tiny').model as GptConfig & { moe: MoeConfig };

test('epLoad: parsed as a number >= 1, printed back, refused without ep and with a message naming the field', () => {
  const l = parseLayout('dp=2,ep=2,mb=2,epLoad=1.25');
  assert.equal(l.epLoad, 1.25);
  assert.equal(parseLayout(layoutString(l)).epLoad, 1.25);
  assert.equal(parseLayout('dp=2,ep=2').epLoad, undefined);
  assert.ok(!layoutString(parseLayout('dp=2,ep=2,epLoad=1')).includes('epLoad'));
  for (const bad of ['0.5', 'x', '', 'Infinity']) assert.throws(() => parseLayout(`dp=2,ep=2,epLoad=${bad}`), /field 'epLoad' must be a number >= 1/);
  assert.match(layoutProblem(parseLayout('dp=2,epLoad=1.5'), moeTiny()) ?? '', /epLoad=1.5 needs ep > 1/);
});

test('epLoad: the row capacity holds epLoad× the balanced rows; expert GEMMs scale by it, the activation by the capacity', () => {
  const m = moeTiny();
  const tr = traceGpt(m, { microBatch: 2 });
  const S = 2 * m.seqLen * m.moe.topK;
  for (const load of [1, 1.3735, 2]) {
    const ep = epRowTerms(tr, load);
    const f = capacityRows(Math.ceil(S * load)) / S;
    for (const k of ep.padded.values()) assert.equal(k, f);
    for (const k of ep.copies.values()) assert.equal(k, 2 + f);
    const gm = tr.ops.filter((o) => o.op === 'groupedMatmul');
    assert.ok(gm.length > 0 && gm.every((o) => ep.opScale(o) === load), 'the grouped GEMMs run the received rows');
    const act = tr.ops.filter((o) => o.op === 'gelu' && ep.padded.has(o.out));
    assert.ok(act.length > 0 && act.every((o) => ep.opScale(o) === f), 'the activation runs over the capacity');
    assert.ok(tr.ops.filter((o) => o.op === 'moeCombine' || o.op === 'moeDispatch').every((o) => ep.opScale(o) === 1));
  }
  assert.throws(() => epRowTerms(tr, 0.9), /epLoad must be a number >= 1/);
});

test('epLoad: memory and step time grow with the load and equal the balanced plan at 1', () => {
  const m = moeTiny();
  const tr = traceGpt(m, { microBatch: 2 });
  const c = loadCluster('this-machine');
  const o = { seqLen: m.seqLen, dModel: m.dModel, allocator: 'athanor-pool' as const };
  const mem = (s: string) => estimateMemory(tr, parseLayout(s), o).total;
  const step = (s: string) => estimate(tr, parseLayout(s), c, o).time.step;
  assert.equal(mem('mb=2,dp=2,ep=2,epLoad=1'), mem('mb=2,dp=2,ep=2'));
  assert.equal(step('mb=2,dp=2,ep=2,epLoad=1'), step('mb=2,dp=2,ep=2'));
  assert.ok(mem('mb=2,dp=2,ep=2,epLoad=1.5') > mem('mb=2,dp=2,ep=2'));
  assert.ok(mem('mb=2,dp=2,ep=2,epLoad=2') > mem('mb=2,dp=2,ep=2,epLoad=1.5'));
  assert.ok(step('mb=2,dp=2,ep=2,epLoad=1.5') > step('mb=2,dp=2,ep=2'));
  assert.ok(estimate(tr, parseLayout('mb=2,dp=2,ep=2'), c, o).notes.some((n) => /epLoad=1/.test(n)), 'the balanced assumption is stated');
});

/** A random-token dataset of vocabulary 256 (train and val splits) in a fresh directory. */
function tokenData(): string {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-eproute-test-'));
  const rng = new Rng(3);
  for (const split of ['train', 'val']) {
    const w = new IndexedDatasetWriter(join(dir, split), { dtype: 'uint16' });
    const doc = new Uint16Array(500);
    for (let i = 0; i < 20; i++) { for (let j = 0; j < doc.length; j++) doc[j] = rng.int(256); w.addDocument(doc); }
    w.finish();
  }
  writeFileSync(join(dir, 'meta.json'), JSON.stringify({ tokenizer: { vocabSize: 256 } }));
  return dir;
}

test('epRoutingLoad: the routing of a dp=2 ep=2 run reproduced in one process; SWIPE at capacity 1 is balanced by construction, dropless is not', async () => {
  const dir = tokenData();
  try {
    const cfg = presetConfig('moe-tiny');
    cfg.model = { ...cfg.model, nLayer: 2, nHead: 2, dModel: 32, dFF: 64, vocabSize: 256, seqLen: 32, moe: { ...cfg.model.moe!, dFF: 32 } };
    cfg.data.dir = dir;
    cfg.train = { ...cfg.train, microBatch: 4, gradAccum: 1, threads: 1 };
    const dropless = await epRoutingLoad(cfg, 2, 2, 3);
    assert.equal(dropless.forwards, 3 * 1, '3 steps × 1 MoE layer × 1 ep group');
    assert.ok(dropless.peak >= dropless.mean && dropless.mean >= 1, JSON.stringify(dropless));
    // SWIPE at capacity factor 1: every expert takes at most its share of every sequence
    // (8 rows of a 32-token sequence at top-2 over 8 experts), so a rank's 4 experts at most
    // half of the 2 × 4 × 64 assignments; the few a token cannot place twice are dropped.
    const swipe = await epRoutingLoad({ ...cfg, model: { ...cfg.model, moe: { ...cfg.model.moe!, balance: 'swipe', capacityFactor: 1 } } }, 2, 2, 3);
    assert.ok(swipe.peak >= 1 && swipe.peak < 1.02, JSON.stringify(swipe));
    assert.ok(dropless.peak > swipe.peak, `dropless ${JSON.stringify(dropless)} vs swipe ${JSON.stringify(swipe)}`);
    await assert.rejects(epRoutingLoad(cfg, 3, 2, 1), /ep=2 must be >= 2 and divide dp=3/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('athanor plan --measure-ep-load: measures the layout\'s routing load by training in one process and plans with it; bad uses are refused', async () => {
  const dir = tokenData();
  try {
    const model = ['--model.nLayer', '2', '--model.nHead', '2', '--model.dModel', '32', '--model.dFF', '64', '--model.vocabSize', '256', '--model.seqLen', '32', '--model.moe.dFF', '32', '--data.dir', dir, '--train.threads', '1'];
    const base = ['plan', '--preset', 'moe-tiny', '--cluster', 'this-machine', ...model];
    const r = await runCli([...base, '--layout', 'dp=2,ep=2,mb=4,ga=1', '--measure-ep-load', '3'], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.out);
    const m = /routing load measured: .* → epLoad=([0-9.]+)/.exec(r.out);
    assert.ok(m, r.out);
    // The same measurement as the library call on the same config, and the plan printed with it.
    const cfg = presetConfig('moe-tiny');
    cfg.model = { ...cfg.model, nLayer: 2, nHead: 2, dModel: 32, dFF: 64, vocabSize: 256, seqLen: 32, moe: { ...cfg.model.moe!, dFF: 32 } };
    cfg.data.dir = dir;
    cfg.train = { ...cfg.train, microBatch: 4, gradAccum: 1, threads: 1 };
    const direct = await epRoutingLoad(cfg, 2, 2, 3);
    assert.equal(m[1], Math.max(1, direct.peak).toFixed(3));
    assert.match(r.out, new RegExp(`epLoad=${m[1]!.replace('.', '\\.')}\\d* = 2 devices`), 'the plan is for the measured load');
    const bad = async (extra: string[], re: RegExp) => {
      const b = await runCli([...base, ...extra]);
      assert.notEqual(b.code, 0);
      assert.match(b.out, re);
    };
    await bad(['--layout', 'dp=2,mb=4', '--measure-ep-load', '3'], /--measure-ep-load needs a layout with ep > 1/);
    await bad(['--layout', 'dp=2,ep=2,mb=4,epLoad=1.2', '--measure-ep-load', '3'], /both give the routing load/);
    await bad(['--layout', 'dp=2,ep=2,mb=4', '--measure-ep-load', 'x'], /--measure-ep-load must be a positive whole number/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
