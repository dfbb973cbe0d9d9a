// The planner: the meta-device trace against closed forms and real allocations, layout
// and cluster validation naming the field, and the layout search's ranking.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PRESETS, presetConfig } from '../src/train/config.js';
import { gptParamCount, type GptConfig } from '../src/nn/gpt-config.js';
import { GPT } from '../src/nn/gpt.js';
import { DLRM } from '../src/recsys/dlrm.js';
import { traceGpt, traceDlrm } from '../src/plan/models.js';
import { estimate, estimateMemory } from '../src/plan/estimate.js';
import { parseLayout, layoutProblem, defaultLayout } from '../src/plan/layout.js';
import { loadCluster, validateCluster, listClusters } from '../src/plan/cluster.js';
import { searchLayouts } from '../src/plan/search.js';
import { planMemory } from '../src/train/memory-plan.js';
import { pool } from '../src/core/buffer-pool.js';
import { scope } from '../src/core/scope.js';
import { fromStorage } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';
import { withPrecision } from '../src/backend/precision.js';
import { runCli, tmp } from './helpers/train-fixture.js';

test('tracing counts exactly the closed-form parameters of every preset (and a rotary, tied variant)', () => {
  for (const name of Object.keys(PRESETS)) {
    const m = presetConfig(name).model;
    const tr = traceGpt(m, { microBatch: 1, seqLen: Math.min(m.seqLen, 64) });
    assert.equal(tr.numParams, gptParamCount(m), name);
  }
  const rot: GptConfig = { ...presetConfig('gpt-tiny').model, positions: 'rotary', tieEmbeddings: true };
  assert.equal(traceGpt(rot, { microBatch: 2 }).numParams, gptParamCount(rot));
});

test('traced forward FLOPs of the matmuls equal the closed form 2·N_matmul per token', () => {
  const m = presetConfig('gpt-small').model;
  const tr = traceGpt(m, { microBatch: 2 });
  const gemm = tr.ops.filter((o) => o.phase === 'forward' && o.cls === 'gemm').reduce((a, o) => a + o.flops, 0);
  const C = m.dModel, F = m.dFF;
  const closed = 2 * (m.nLayer * (3 * C * C + C * C + 2 * C * F) + m.vocabSize * C);
  assert.equal(gemm / tr.items, closed);
});

test('DLRM traces on the meta device with the real model\'s parameter names and counts', () => {
  const cfg = { numDense: 13, numSparse: 26, embDim: 16, bottom: [64, 32], top: [64, 32] };
  const real = new DLRM(cfg);
  const tr = traceDlrm(cfg, { batch: 32 });
  assert.deepEqual(tr.params.map((p) => [p.name, p.numel]), real.namedParameters().map(([n, p]) => [n, p.size]));
  assert.ok(tr.ops.some((o) => o.cls === 'gemm' && o.phase === 'backward'));
});

/** Peak of live pool bytes over one real training micro-step (forward + backward), parameter gradients excluded. */
function measuredStep(cfg: GptConfig, B: number, recompute: boolean): number {
  const model = new GPT(cfg, { seed: 1, recompute });
  const T = cfg.seqLen;
  const x = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % cfg.vocabSize), y = x.map((v) => (v + 1) % cfg.vocabSize);
  const step = () => scope(() => { const l = model.loss(fromStorage(x, [B, T], 'int32'), fromStorage(y, [B, T], 'int32')); backward(l); return l.item(); });
  step(); // parameter gradients are allocated here and persist
  let live = 0, peak = 0;
  const acq = pool.acquire, rel = pool.release;
  pool.acquire = function (d, n) { const b = acq.call(pool, d, n); live += b.byteLength; peak = Math.max(peak, live); return b; };
  pool.release = function (d, b) { if (b.length >= 256) live -= b.byteLength; rel.call(pool, d, b); };
  try { step(); } finally { pool.acquire = acq; pool.release = rel; }
  return peak;
}

test('traced activation memory equals the real allocation of a training step within 3% (with and without recomputation)', () => {
  const cfg: GptConfig = { ...presetConfig('gpt-tiny').model, nLayer: 2, seqLen: 64 };
  for (const recompute of [false, true]) {
    const real = measuredStep(cfg, 4, recompute);
    const l = { ...defaultLayout(), mb: 4, recompute: recompute ? 'full' as const : 'none' as const };
    const plan = estimateMemory(traceGpt(cfg, { microBatch: 4, recompute }), l, { seqLen: 64, dModel: cfg.dModel });
    assert.ok(Math.abs(plan.activations / real - 1) < 0.03, `recompute=${recompute}: traced ${plan.activations}, measured ${real}`);
  }
});

test('recomputation lowers the traced activation memory (and the real one)', () => {
  const cfg: GptConfig = { ...presetConfig('gpt-tiny').model, nLayer: 3, seqLen: 64 };
  const mem = (rc: boolean) => estimateMemory(traceGpt(cfg, { microBatch: 4, recompute: rc }), { ...defaultLayout(), mb: 4 }, { seqLen: 64, dModel: cfg.dModel }).activations;
  assert.ok(mem(true) < 0.7 * mem(false), `${mem(true)} vs ${mem(false)}`);
  assert.ok(measuredStep(cfg, 4, true) < 0.7 * measuredStep(cfg, 4, false));
});

test('train --dry-run memory is the traced plan', () => {
  const cfg = presetConfig('gpt-small');
  const p = planMemory(cfg);
  const e = estimateMemory(traceGpt(cfg.model, { microBatch: cfg.train.microBatch }), { ...defaultLayout(), mb: cfg.train.microBatch }, { seqLen: cfg.model.seqLen, dModel: cfg.model.dModel, allocator: 'athanor-pool' });
  assert.equal(p.params, gptParamCount(cfg.model));
  assert.deepEqual(p.detail, e);
  assert.equal(p.bytes.activations, e.activationsPoolHeld);
  assert.equal(p.bytes.weights, 4 * p.params);
});

test('Athanor runtime memory model: ZeRO stages as data-parallel.ts allocates them', () => {
  const m = presetConfig('gpt-small').model;
  const tr = traceGpt(m, { microBatch: 4 });
  const mem = (s: string) => estimateMemory(tr, parseLayout(s), { seqLen: m.seqLen, dModel: m.dModel, allocator: 'athanor-pool' });
  const P = 4 * gptParamCount(m);
  assert.equal(mem('mb=4,dp=2').total, mem('mb=4').total); // flat buffers replace, not copy
  assert.equal(mem('mb=4,dp=2,zero=1').optimizer, P); // 2 moments over 2 ranks
  assert.equal(mem('mb=4,dp=2,zero=1').commBuffers, P / 2); // the all-gather staging shard
  assert.equal(mem('mb=4,dp=2,zero=2').grads, P / 2 + P); // shard gradient + full gradients kept by the pool
  // ZeRO-3: the shard (falls as 1/dp) plus a gathered block, a prefetched one and the outer
  // unit (constant in dp); no full flat buffer beside them (that alone would be P).
  const z3 = (dp: number) => mem(`mb=4,dp=${dp},zero=3`).weights;
  assert.ok(Math.abs(z3(2) - z3(4) - P / 4) < 1, 'ZeRO-3 weights: the shard falls as 1/dp');
  assert.ok(z3(4) - P / 4 < P, 'ZeRO-3 weights: beside the shard only gathered units, not the full parameters');
});

test('tp, pp, ZeRO and sp shrink memory the way the layout says', () => {
  const m = presetConfig('gpt-small').model;
  const tr = traceGpt(m, { microBatch: 2 });
  const mem = (s: string) => estimateMemory(tr, parseLayout(s), { seqLen: m.seqLen, dModel: m.dModel });
  const base = mem('mb=2');
  assert.equal(mem('mb=2,dp=4,zero=1').optimizer, base.optimizer / 4);
  assert.equal(mem('mb=2,dp=4,zero=2').grads, base.grads / 4);
  assert.equal(mem('mb=2,dp=4,zero=3').weights, base.weights / 4);
  assert.ok(mem('mb=2,tp=2').weights < 0.6 * base.weights);
  assert.ok(mem('mb=2,tp=2,sp=true').activations < mem('mb=2,tp=2').activations);
  assert.ok(mem('mb=2,precision=bf16').activations === base.activations / 2);
});

test('bad layouts name the field', () => {
  assert.throws(() => parseLayout('tp=0'), /field 'tp' must be an integer >= 1, got '0'/);
  assert.throws(() => parseLayout('zero=4'), /field 'zero' must be 0, 1, 2 or 3/);
  assert.throws(() => parseLayout('precision=fp8'), /field 'precision' must be one of fp32, bf16/);
  assert.throws(() => parseLayout('tq=2'), /unknown field 'tq'/);
  assert.throws(() => parseLayout('tp'), /'tp' is not key=value/);
  assert.match(layoutProblem(parseLayout('tp=3'), presetConfig('gpt-small').model) ?? '', /tp=3 does not divide the 8 attention heads/);
});

test('bad cluster files name the field', () => {
  const spec = loadCluster('fugaku');
  const bad1 = JSON.parse(JSON.stringify(spec)); delete bad1.device.memoryBytes;
  assert.throws(() => validateCluster(bad1, 'c.json'), /c\.json: field 'device\.memoryBytes' must be an object/);
  const bad2 = JSON.parse(JSON.stringify(spec)); bad2.network.inter.beta.source = '';
  assert.throws(() => validateCluster(bad2, 'c.json'), /field 'network\.inter\.beta\.source' must cite/);
  const bad3 = JSON.parse(JSON.stringify(spec)); bad3.device.gemmEfficiency.value = 1.5;
  assert.throws(() => validateCluster(bad3, 'c.json'), /device\.gemmEfficiency\.value' must be a fraction/);
  const f = join(tmp('cl'), 'broken.json');
  writeFileSync(f, '{ "name": ');
  assert.throws(() => loadCluster(f), /broken\.json/);
  assert.throws(() => loadCluster('no-such-cluster'), /no such cluster file/);
  const bad4 = JSON.parse(JSON.stringify(spec)); bad4.nodez = 3;
  assert.throws(() => validateCluster(bad4, 'c.json'), /unknown field 'nodez'/);
});

test('every shipped cluster spec validates and cites a source for each figure', () => {
  const names = listClusters();
  for (const n of ['fugaku', 'oceanlight', 'aurora', 'frontier', 'persia-cloud', 'asc-8gpu', 'this-machine']) assert.ok(names.includes(n), n);
  for (const n of names) loadCluster(n);
});

test('search proposes only valid layouts that fit, ranked by predicted tokens/s', () => {
  const m = presetConfig('gpt2-124m').model;
  const c = loadCluster('asc-8gpu');
  const r = searchLayouts(m, c, { devices: 8, globalBatch: 32, precision: 'bf16' });
  assert.ok(r.ranked.length > 0 && r.ranked.length <= 5);
  for (const { est, why } of r.ranked) {
    assert.equal(layoutProblem(est.layout, m), null);
    assert.ok(est.fits);
    assert.equal(est.layout.tp * est.layout.pp * est.layout.dp, 8);
    assert.equal(est.layout.mb * est.layout.ga * est.layout.dp, 32);
    assert.ok(why.length > 0);
  }
  for (let i = 1; i < r.ranked.length; i++) assert.ok(r.ranked[i - 1]!.est.tokensPerSec >= r.ranked[i]!.est.tokensPerSec);
  // Shrinking the device memory can only remove layouts: the survivors keep their order.
  const small = { ...c, device: { ...c.device, memoryBytes: { ...c.device.memoryBytes, value: r.ranked[0]!.est.memory.total - 1 } } };
  const r2 = searchLayouts(m, small, { devices: 8, globalBatch: 32, precision: 'bf16' });
  for (const { est } of r2.ranked) assert.ok(est.memory.total < r.ranked[0]!.est.memory.total);
});

test('estimate: more data parallelism gives more tokens/s; a pipeline adds a bubble', () => {
  const m = presetConfig('gpt-small').model;
  const c = loadCluster('asc-8gpu');
  const tr = traceGpt(m, { microBatch: 4 });
  const e1 = estimate(tr, parseLayout('mb=4,ga=4'), c, { seqLen: m.seqLen, dModel: m.dModel });
  const e4 = estimate(tr, parseLayout('mb=4,ga=4,dp=4'), c, { seqLen: m.seqLen, dModel: m.dModel });
  const p2 = estimate(tr, parseLayout('mb=4,ga=4,pp=2'), c, { seqLen: m.seqLen, dModel: m.dModel });
  assert.ok(e4.tokensPerSec > 2 * e1.tokensPerSec);
  assert.ok(p2.time.bubble > 0);
  assert.ok(e1.mfu > 0 && e1.mfu < 1);
});

test('athanor plan: CLI output, --json and errors naming the field', async () => {
  const r = await runCli(['plan', '--preset', 'gpt-small', '--cluster', 'asc-8gpu', '--layout', 'dp=8,mb=8,precision=bf16']);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /memory per device/);
  assert.match(r.out, /tokens\/s, MFU/);
  const j = await runCli(['plan', '--preset', 'gpt-small', '--cluster', 'asc-8gpu', '--layout', 'dp=2', '--json']);
  assert.equal(j.code, 0, j.out);
  assert.equal((JSON.parse(j.out) as { params: number }).params, 21_130_240);
  const bad = await runCli(['plan', '--preset', 'gpt-small', '--cluster', 'asc-8gpu', '--layout', 'dp=2,zero=9']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.out, /field 'zero' must be 0, 1, 2 or 3/);
  const nocl = await runCli(['plan', '--preset', 'gpt-small']);
  assert.match(nocl.out, /--cluster is required/);
});

test('mixed precision: the bf16 trace (16-bit casts, 16-bit attention probabilities) matches a real bf16 step within 5%; weights add a 16-bit copy', () => {
  const cfg: GptConfig = { ...presetConfig('gpt-tiny').model, nLayer: 2, seqLen: 64 };
  const real = withPrecision('bf16', () => measuredStep(cfg, 4, false));
  const tr = traceGpt(cfg, { microBatch: 4, precision: 'bf16' });
  assert.equal(tr.precision, 'bf16');
  const l = { ...defaultLayout(), mb: 4, precision: 'bf16' as const };
  const plan = estimateMemory(tr, l, { seqLen: 64, dModel: cfg.dModel, allocator: 'athanor-pool' });
  assert.ok(Math.abs(plan.activations / real - 1) < 0.05, `traced ${plan.activations}, measured ${real}`);
  // Athanor keeps fp32 master weights, gradients and moments; GEMM weights get a 16-bit copy.
  const fp32 = estimateMemory(traceGpt(cfg, { microBatch: 4 }), { ...l, precision: 'fp32' }, { seqLen: 64, dModel: cfg.dModel, allocator: 'athanor-pool' });
  assert.equal(plan.grads, fp32.grads);
  assert.equal(plan.optimizer, fp32.optimizer);
  assert.ok(plan.weights > fp32.weights && plan.weights < 1.5 * fp32.weights);
});

test('communication on a CPU device: commComputeShare charges overlapped communication to the step, and a bad value names the field', () => {
  const m = presetConfig('gpt-tiny').model;
  const c = loadCluster('this-machine');
  const tr = traceGpt(m, { microBatch: 16 });
  const l = parseLayout('dp=2,mb=16');
  const off = estimate(tr, l, { ...c, commComputeShare: { value: 0, source: 'assumption: test' } }, { seqLen: m.seqLen, dModel: m.dModel });
  const on = estimate(tr, l, { ...c, commComputeShare: { value: 1, source: 'assumption: test' } }, { seqLen: m.seqLen, dModel: m.dModel });
  assert.ok(off.time.hiddenComm > 0);
  assert.ok(Math.abs(on.time.step - off.time.step - off.time.hiddenComm) < 1e-12);
  const bad = JSON.parse(JSON.stringify(c)); bad.commComputeShare.value = 2;
  assert.throws(() => validateCluster(bad, 'c.json'), /c\.json: field 'commComputeShare\.value' must be a fraction in \[0, 1\]/);
});

test('pipeline in-flight micro-batches follow the schedule: GPipe all, 1F1B pp − stage, interleaved its warm-up chunks', async () => {
  const { inflightMicroBatches } = await import('../src/plan/estimate.js');
  assert.equal(inflightMicroBatches(parseLayout('pp=4,ga=8,schedule=gpipe'), 0), 8);
  assert.equal(inflightMicroBatches(parseLayout('pp=4,ga=8'), 0), 4);
  assert.equal(inflightMicroBatches(parseLayout('pp=4,ga=8'), 3), 1);
  // Megatron's interleaved warm-up: (pp − s − 1)·2 + (vpp − 1)·pp chunks, then one more.
  assert.equal(inflightMicroBatches(parseLayout('pp=2,ga=4,schedule=interleaved,vpp=2'), 0), (2 + 2 + 1) / 2);
});
