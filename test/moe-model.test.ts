// The MoE layer as plain model code: preset parameter counts (total and active) against
// the closed form, routing (capacity, dropping, SWIPE, bias balancing), the grouped
// expert GEMM against a per-expert loop, and training a tiny MoE GPT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { presetConfig, validateTrainConfig } from '../src/train/config.js';
import { GPT } from '../src/nn/gpt.js';
import { gptActiveParamCount, gptParamCount } from '../src/nn/gpt-config.js';
import { routeTokens } from '../src/nn/moe-router.js';
import { groupedMatmul } from '../src/ops/moe.js';
import { linear } from '../src/ops/matmul.js';
import { fromStorage } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { train } from '../src/train/trainer.js';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { parseArgs } from '../src/train/overrides.js';
import { tinyData, tinyArgs, tmp, runCli } from './helpers/train-fixture.js';

test('moe-tiny and moe-small parameter counts: meta model = closed form = hand count (total and active per token)', () => {
  // Hand count. Dense block: 2 LN (4C) + qkv (3C²+3C) + proj (C²+C) + MLP (2CF+F+C).
  // MoE block: the MLP becomes router (E·C) + E experts (2C·Fe+Fe+C) each; a token uses K of them.
  const count = (L: number, C: number, F: number, V: number, T: number, E: number, K: number, Fe: number, every: number) => {
    const attn = 4 * C + 3 * C * C + 3 * C + C * C + C, mlp = 2 * C * F + F + C, expert = 2 * C * Fe + Fe + C;
    const nMoe = Math.floor(L / every), nDense = L - nMoe;
    const outer = V * C + T * C + 2 * C + V * C;
    return {
      total: outer + nDense * (attn + mlp) + nMoe * (attn + E * C + E * expert),
      active: outer + nDense * (attn + mlp) + nMoe * (attn + E * C + K * expert),
    };
  };
  const cases: [string, ReturnType<typeof count>][] = [
    ['moe-tiny', count(4, 128, 512, 2048, 128, 8, 2, 256, 2)],
    ['moe-small', count(4, 512, 2048, 8192, 256, 8, 2, 1024, 2)],
  ];
  for (const [name, want] of cases) {
    const cfg = presetConfig(name).model;
    assert.equal(new GPT(cfg, { device: 'meta' }).numParameters(), want.total, name);
    assert.equal(gptParamCount(cfg), want.total, name);
    assert.equal(gptActiveParamCount(cfg), want.active, name);
  }
  assert.equal(gptParamCount(presetConfig('moe-tiny').model), 2_127_360);
  assert.equal(gptActiveParamCount(presetConfig('moe-tiny').model), 1_336_320);
  assert.equal(gptParamCount(presetConfig('moe-small').model), 33_740_800);
  assert.equal(gptActiveParamCount(presetConfig('moe-small').model), 21_139_456);
  // Same active MLP compute per token as gpt-tiny: K · Fe = F.
  const t = presetConfig('moe-tiny').model;
  assert.equal(t.moe!.topK * t.moe!.dFF, presetConfig('gpt-tiny').model.dFF);
});

function randomProbs(N: number, E: number, seed: number, skew = 0): Float64Array {
  const rng = new Rng(seed), p = new Float64Array(N * E);
  rng.fillNormal(p, 0, 1);
  for (let t = 0; t < N; t++) {
    let s = 0;
    for (let e = 0; e < E; e++) { p[t * E + e] = Math.exp(p[t * E + e]! + (e === 0 ? skew : 0)); s += p[t * E + e]!; }
    for (let e = 0; e < E; e++) p[t * E + e]! /= s;
  }
  return p;
}

test('routing: capacity drops overflow per sequence, the same tokens whichever way the batch is split', () => {
  const G = 4, T = 16, E = 4, K = 2;
  const probs = randomProbs(G * T, E, 3, 1.5); // expert 0 overloaded
  const o = { groups: G, groupSize: T, experts: E, topK: K, capacityFactor: 1, swipe: false, bias: null };
  const r = routeTokens(probs, o);
  const cap = Math.ceil((1 * T * K) / E);
  assert.equal(r.capacity, cap);
  assert.ok(r.dropped > 0, 'the skewed router overflows expert 0');
  assert.equal(r.srcRow.length, G * T * K - r.dropped);
  assert.equal([...r.counts].reduce((a, b) => a + b, 0), r.srcRow.length);
  // grouped by expert: the expert of each row is non-decreasing and matches its assignment
  const rowExpert = new Int32Array(r.srcRow.length);
  for (let a = 0; a < G * T * K; a++) if (r.slot[a]! >= 0) rowExpert[r.slot[a]!] = r.expert[a]!;
  for (let s = 1; s < rowExpert.length; s++) assert.ok(rowExpert[s]! >= rowExpert[s - 1]!);
  // Splitting the batch into two halves (two ranks) drops the same assignments.
  const half = (lo: number) => routeTokens(probs.subarray(lo * T * E, (lo + G / 2) * T * E), { ...o, groups: G / 2 });
  const a = half(0), b = half(G / 2);
  const keptSplit = [...a.slot, ...b.slot].map((s) => s >= 0);
  assert.deepEqual(keptSplit, [...r.slot].map((s) => s >= 0));
  assert.equal(a.dropped + b.dropped, r.dropped);
  // Dropless keeps everything.
  assert.equal(routeTokens(probs, { ...o, capacityFactor: 0 }).dropped, 0);
});

test('routing: SWIPE moves overflow to under-loaded experts (no drops once capacity has slack)', () => {
  const G = 2, T = 32, E = 8, K = 2;
  const probs = randomProbs(G * T, E, 5, 2.5);
  const o = { groups: G, groupSize: T, experts: E, topK: K, capacityFactor: 1.0, swipe: false, bias: null };
  const plain = routeTokens(probs, o), swipe = routeTokens(probs, { ...o, swipe: true });
  assert.ok(plain.dropped > 0);
  // At factor 1 total capacity equals demand exactly, so the last overflow may only fit an
  // expert the token already uses; with 25% slack nothing is dropped.
  assert.equal(swipe.moved + swipe.dropped, plain.dropped);
  assert.ok(swipe.dropped * 4 < plain.dropped, `swipe dropped ${swipe.dropped} of ${plain.dropped}`);
  const slack = routeTokens(probs, { ...o, swipe: true, capacityFactor: 1.25 });
  assert.equal(slack.dropped, 0);
  const loadMax = Math.max(...swipe.counts) / (swipe.srcRow.length / E);
  assert.ok(loadMax <= 1.0 + 1e-9 || Math.max(...swipe.counts) <= G * swipe.capacity, `max/mean ${loadMax}`);
  // a token never gets the same expert twice
  for (let t = 0; t < G * T; t++) assert.notEqual(swipe.expert[t * K], swipe.expert[t * K + 1]);
});

// The bias update (balance = bias) is tested in moe-bias-balance.test.ts.

test('grouped GEMM equals a per-expert loop of linear layers', () => {
  const rng = new Rng(2);
  const E = 3, Cin = 8, Cout = 5, counts = Int32Array.from([4, 0, 7]), S = 11;
  const x = new Float32Array(S * Cin), w = new Float32Array(E * Cout * Cin), b = new Float32Array(E * Cout);
  rng.fillNormal(x); rng.fillNormal(w); rng.fillNormal(b);
  const out = groupedMatmul(fromStorage(x, [S, Cin], 'float32'), fromStorage(w, [E, Cout, Cin], 'float32'), fromStorage(b, [E, Cout], 'float32'), counts);
  let o = 0;
  for (let e = 0; e < E; e++) {
    const n = counts[e]!;
    if (n === 0) continue;
    const ref = linear(fromStorage(x.slice(o * Cin, (o + n) * Cin), [n, Cin], 'float32'), fromStorage(w.slice(e * Cout * Cin, (e + 1) * Cout * Cin), [Cout, Cin], 'float32'), fromStorage(b.slice(e * Cout, (e + 1) * Cout), [Cout], 'float32'));
    const got = (out.data as Float32Array).subarray(o * Cout, (o + n) * Cout);
    for (let i = 0; i < n * Cout; i++) assert.ok(Math.abs(got[i]! - ref.data[i]!) < 1e-5);
    o += n;
  }
});

const moeArgs = ['--model.moe.experts=4', '--model.moe.topK=2', '--model.moe.every=1', '--model.moe.dFF=64'];

test('a tiny MoE GPT trains: validation loss falls, routing metrics go to metrics.jsonl', async () => {
  const data = await tinyData();
  for (const extra of [['--model.moe.balance=aux', '--model.moe.zLossCoef=1e-3'], ['--model.moe.balance=bias', '--model.moe.capacityFactor=1.25'], ['--model.moe.balance=swipe', '--model.moe.capacityFactor=1', '--model.moe.sharedExpert'], ['--model.moe.balance=bias', '--model.moe.capacityFactor=1', '--model.moe.overflow=reroute']]) {
    const out = tmp('moe');
    const cfg = configFromArgs(parseArgs([...tinyArgs(data, out), ...moeArgs, ...extra, '--train.steps=30', '--train.evalEvery=10', '--optim.lr=3e-3']).flags);
    const r = await train(cfg, { quiet: true });
    const first = r.valLosses[0]!.loss, last = r.valLosses.at(-1)!.loss;
    assert.ok(last < first - 0.15, `${extra.join(' ')}: validation loss ${first} → ${last}`);
    const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.kind === 'step');
    const moe = steps.at(-1).moe;
    assert.ok(moe, 'step metrics carry moe statistics');
    assert.equal(moe.load.length, 2);
    assert.equal(moe.load[0].length, 4);
    // every (token, k) assignment is counted: kept rows + dropped = tokens · K
    assert.ok(moe.dropRate >= 0 && moe.dropRate < 0.5);
    if (extra.includes('--model.moe.balance=aux')) { assert.equal(moe.dropRate, 0); assert.ok(moe.auxLoss > 0); }
    if (extra.includes('--model.moe.balance=swipe')) assert.ok(moe.dropRate < 0.02, `swipe drop rate ${moe.dropRate}`);
    if (extra.includes('--model.moe.overflow=reroute')) {
      // each sequence fits the capacity by moving tokens, not by dropping them: rows per expert ≤ B·capacity
      assert.ok(steps.some((m) => m.moe.movedRate > 0), 'reroute moves tokens');
      const cap = Math.ceil((1 * cfg.model.seqLen * 2) / 4), B = cfg.train.microBatch * cfg.train.gradAccum;
      for (const m of steps) for (const l of m.moe.load) assert.ok(Math.max(...l) <= B * cap, `step ${m.step}: rows ${l} over ${B} × ${cap}`);
      assert.ok(Math.max(...steps.map((m) => m.moe.dropRate)) < 0.02, 'reroute leaves (almost) nothing to drop');
    }
    assert.ok(moe.entropy > 0 && moe.entropy <= Math.log(4) + 1e-6);
  }
});

test('athanor train --preset moe-tiny trains and prints routing on the progress line', async () => {
  const data = await tinyData();
  const out = tmp('moe-cli');
  const args = tinyArgs(data, out).map((a) => (a === 'gpt-tiny' ? 'moe-tiny' : a));
  const r = await runCli(['train', ...args, '--model.moe.dFF=64', '--train.steps=6']);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /moe drop [\d.]+% load max\/mean [\d.]+ aux/);
  assert.match(r.out, /parameters \(closed form/);
});

test('config errors name the field', () => {
  const bad = (args: string[], re: RegExp) => assert.throws(() => validateTrainConfig(configFromArgs(parseArgs(['--preset', 'moe-tiny', ...args]).flags)), re);
  bad(['--model.moe.topK=9'], /model\.moe\.topK \(9\) must not exceed model\.moe\.experts \(8\)/);
  bad(['--model.moe.balance=magic'], /model\.moe\.balance must be one of aux, bias, swipe, none/);
  bad(['--model.moe.balance=swipe', '--model.moe.capacityFactor=0'], /capacityFactor > 0/);
});

test('unsupported MoE layouts are refused at config validation, naming the fields', () => {
  const bad = (args: string[], world: number, re: RegExp) => assert.throws(() => validateTrainConfig(configFromArgs(parseArgs(['--preset', 'moe-tiny', ...args]).flags), world), re);
  // MoE composes with tp (experts split over F) and pp (ep inside each stage), not with sp or tp × ep.
  bad(['--parallel.tp=2', '--parallel.sp=true'], 2, /parallel\.sp=true is not supported with an MoE model/);
  bad(['--parallel.tp=2', '--model.moe.dFF=33'], 2, /model\.moe\.dFF \(33\) must be divisible by parallel\.tp \(2\)/);
  bad(['--parallel.ep=2', '--parallel.dp=2', '--parallel.tp=2'], 4, /parallel\.ep = 2 with parallel\.tp = 2 is not supported/);
  for (const a of [['--parallel.tp=2'], ['--parallel.pp=2', '--train.gradAccum=2'], ['--parallel.ep=2', '--parallel.dp=2', '--parallel.pp=2', '--train.gradAccum=2']]) {
    const world = a.includes('--parallel.dp=2') ? 4 : 2;
    validateTrainConfig(configFromArgs(parseArgs(['--preset', 'moe-tiny', ...a]).flags), world);
  }
  bad(['--parallel.ep=4', '--parallel.dp=2'], 2, /parallel\.ep \(4\) must divide parallel\.dp \(2\)/);
  bad(['--parallel.ep=3', '--parallel.dp=3'], 3, /parallel\.ep \(3\) must divide model\.moe\.experts \(8\)/);
  // what is supported passes: ep × dp with ZeRO-1/2
  for (const zero of [0, 1, 2]) validateTrainConfig(configFromArgs(parseArgs(['--preset', 'moe-tiny', '--parallel.ep=2', '--parallel.dp=4', `--parallel.zero=${zero}`]).flags), 4);
  bad(['--parallel.ep=2', '--parallel.dp=2', '--parallel.zero=3'], 2, /parallel\.zero = 3 does not support MoE/);
});
