// The planner on mixture-of-experts models: the MoE layer's meta branch (balanced routing,
// capacity respected) against closed forms and a real training step, expert parallelism
// in the memory and time model, and the layout search with ep.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { gptParamCount, type GptConfig } from '../src/nn/gpt-config.js';
import { moeLayerCount, moeLayerParams, expertFF, type MoeConfig } from '../src/nn/moe-config.js';
import { balancedExpertCounts } from '../src/nn/moe-meta.js';
import { GPT } from '../src/nn/gpt.js';
import { traceGpt } from '../src/plan/models.js';
import { allToAllTime, estimate, estimateMemory } from '../src/plan/estimate.js';
import { EP_ROW_COPIES, epRowTerms } from '../src/plan/ep-terms.js';
import { capacityRows } from '../src/parallel/expert-parallel-capacity.js';
import { parseLayout, layoutProblem } from '../src/plan/layout.js';
import { loadCluster } from '../src/plan/cluster.js';
import { searchLayouts } from '../src/plan/search.js';
import { pool } from '../src/core/buffer-pool.js';
import { scope } from '../src/core/scope.js';
import { fromStorage } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';

const moeTiny = (): GptConfig & { moe: MoeConfig } => presetConfig('moe-tiny').model as GptConfig & { moe: MoeConfig };

test('MoE: the traced parameters and expert GEMM rows equal the closed forms (dropless and with capacity)', () => {
  const m = moeTiny();
  const B = 2, T = 32, E = m.moe.experts, K = m.moe.topK, F = expertFF(m.moe, m.dFF);
  const tr = traceGpt(m, { microBatch: B, seqLen: T });
  assert.equal(tr.numParams, gptParamCount(m));
  const nMoe = moeLayerCount(m.moe, m.nLayer);
  const fc = tr.ops.filter((o) => o.op === 'groupedMatmul' && o.phase === 'forward');
  assert.equal(fc.length, 2 * nMoe);
  // Dropless: every token reaches its K experts, S = B·T·K rows, FLOPs 2·S·C·F per GEMM.
  for (const o of fc) assert.equal(o.flops, 2 * B * T * K * m.dModel * F);
  // Capacity 0.5: each expert keeps ceil(0.5·T·K/E) of its T·K/E assignments per sequence.
  const capped: GptConfig = { ...m, moe: { ...m.moe, capacityFactor: 0.5 } };
  const cap = Math.ceil((0.5 * T * K) / E);
  const trc = traceGpt(capped, { microBatch: B, seqLen: T });
  for (const o of trc.ops.filter((x) => x.op === 'groupedMatmul' && x.phase === 'forward')) assert.equal(o.flops, 2 * B * E * cap * m.dModel * F);
  // Counts: remainders go to the lowest experts, capacity caps them.
  assert.deepEqual([...balancedExpertCounts({ experts: 3, topK: 1, capacityFactor: 0 }, 2, 7)], [6, 4, 4]);
  assert.deepEqual([...balancedExpertCounts({ experts: 3, topK: 1, capacityFactor: 1 }, 2, 7)], [6, 4, 4]);
  assert.deepEqual([...balancedExpertCounts({ experts: 4, topK: 2, capacityFactor: 0.5 }, 1, 8)], [2, 2, 2, 2]);
});

/** Peak of live pool bytes over one real training micro-step (parameter gradients excluded). */
function measuredStep(cfg: GptConfig, B: number): number {
  const model = new GPT(cfg, { seed: 1 });
  const T = cfg.seqLen;
  const x = Int32Array.from({ length: B * T }, (_, i) => (i * 7) % cfg.vocabSize), y = x.map((v) => (v + 1) % cfg.vocabSize);
  const step = () => scope(() => { const l = model.loss(fromStorage(x, [B, T], 'int32'), fromStorage(y, [B, T], 'int32')); backward(l); return l.item(); });
  step();
  let live = 0, peak = 0;
  const acq = pool.acquire, rel = pool.release;
  pool.acquire = function (d, n) { const b = acq.call(pool, d, n); live += b.byteLength; peak = Math.max(peak, live); return b; };
  pool.release = function (d, b) { if (b.length >= 256) live -= b.byteLength; rel.call(pool, d, b); };
  try { step(); } finally { pool.acquire = acq; pool.release = rel; }
  return peak;
}

test('MoE: traced activation memory equals the real allocation of a dropless training step within 2%', () => {
  // Dropless routing keeps B·T·K rows whatever the router picks, so the balanced-routing
  // trace and the real step allocate the same buffers.
  const cfg: GptConfig = { ...moeTiny(), nLayer: 2, seqLen: 64 };
  const real = measuredStep(cfg, 4);
  const plan = estimateMemory(traceGpt(cfg, { microBatch: 4 }), parseLayout('mb=4'), { seqLen: 64, dModel: cfg.dModel });
  console.log(`# moe-tiny activations: traced ${plan.activations}, measured ${real}`);
  assert.ok(Math.abs(plan.activations / real - 1) < 0.02, `traced ${plan.activations}, measured ${real}`);
});

test('MoE: expert weights shard over ep, dense ones do not; ZeRO shards experts over edp', () => {
  const m = moeTiny();
  const tr = traceGpt(m, { microBatch: 2 });
  const nMoe = moeLayerCount(m.moe, m.nLayer);
  const F = expertFF(m.moe, m.dFF), C = m.dModel;
  const experts = nMoe * m.moe.experts * (2 * C * F + F + C);
  const dense = gptParamCount(m) - experts;
  assert.equal(experts + dense, nMoe * moeLayerParams(m.moe, C, m.dFF).total - nMoe * m.moe.experts * C + dense);
  const mem = (s: string) => estimateMemory(tr, parseLayout(s), { seqLen: m.seqLen, dModel: C });
  assert.equal(mem('mb=2,dp=2').weights, 4 * (dense + experts));
  assert.equal(mem('mb=2,dp=2,ep=2').weights, 4 * (dense + experts / 2));
  assert.equal(mem('mb=2,dp=4,ep=4').weights, 4 * (dense + experts / 4));
  // ZeRO-1 over dp=4 with ep=2: dense moments over 4 ranks, expert moments over edp = 2.
  assert.equal(mem('mb=2,dp=4,ep=2,zero=1').optimizer, 8 * (dense / 4 + experts / 2 / 2));
  // Athanor's runtime keeps experts outside ZeRO (expert-parallel-layer.ts).
  const pooled = estimateMemory(tr, parseLayout('mb=2,dp=2,ep=2'), { seqLen: m.seqLen, dModel: C, allocator: 'athanor-pool' });
  assert.equal(pooled.weights, 4 * (dense + experts / 2));
});

test('MoE: under ep each layer\'s dispatched rows gain EP_ROW_COPIES buffers for the step, and the expert activations are sized at the row capacity (expert-parallel.ts)', () => {
  const m = moeTiny();
  const tr = traceGpt(m, { microBatch: 2 });
  const ep = epRowTerms(tr);
  assert.equal(ep.copies.size, moeLayerCount(m.moe, m.nLayer), 'one dispatched-rows buffer per MoE layer');
  const S = 2 * m.seqLen * m.moe.topK, f = capacityRows(S) / S;
  assert.ok(f >= 1 && f <= 1.125, `capacity ${capacityRows(S)} for ${S} rows`);
  // Balanced routing: the rows a layer dispatches are its tokens × top-k, C wide.
  for (const [id, k] of ep.copies) {
    assert.equal(tr.buffers[id]!.bytes, 4 * S * m.dModel);
    assert.equal(k, 1 + EP_ROW_COPIES - 1 + f, 'xp itself, the received rows at capacity, the combine exchange output');
  }
  // Per layer: the first grouped GEMM's output, the activation, the second grouped GEMM's output.
  assert.equal(ep.padded.size, 3 * ep.copies.size);
  for (const id of ep.padded.keys()) assert.equal(tr.buffers[id]!.shape[0], S);
  const act = tr.ops.filter((o) => o.op === 'gelu' && o.block % 2 === 1);
  assert.ok(act.length > 0 && act.every((o) => ep.opScale(o) === f), 'the expert activation runs over the padding rows');
  assert.ok(tr.ops.filter((o) => o.op === 'groupedMatmul' || o.op === 'moeCombine').every((o) => ep.opScale(o) === 1), 'the GEMMs skip the padding; the combine reads S rows');
  const mem = (s: string, allocator: 'athanor-pool' | 'live' = 'athanor-pool') => estimateMemory(tr, parseLayout(s), { seqLen: m.seqLen, dModel: m.dModel, allocator });
  // All of them are live at the end of the forward, the step's peak: it grows by exactly that.
  let extra = 0;
  for (const [id, k] of ep.copies) extra += tr.buffers[id]!.bytes * (k - 1);
  for (const [id, k] of ep.padded) extra += tr.buffers[id]!.bytes * (k - 1);
  assert.ok(Math.abs(mem('mb=2,dp=2,ep=2').activations - mem('mb=2,dp=2').activations - extra) < 1, `${mem('mb=2,dp=2,ep=2').activations - mem('mb=2,dp=2').activations} vs ${extra}`);
  assert.equal(mem('mb=2,dp=4,ep=4').activations, mem('mb=2,dp=4,ep=2').activations);
  // Another runtime's copies are not Athanor's: no term there.
  assert.equal(mem('mb=2,dp=2,ep=2', 'live').activations, mem('mb=2,dp=2', 'live').activations);
});

test('MoE: all-to-all is priced per layer; hierarchical beats flat across nodes for small messages, equals it inside one', () => {
  const m = moeTiny();
  const c = loadCluster('oceanlight');
  const tr = traceGpt(m, { microBatch: 2 });
  const e1 = estimate(tr, parseLayout('mb=2,dp=2'), c, { seqLen: m.seqLen, dModel: m.dModel });
  const e2 = estimate(tr, parseLayout('mb=2,dp=2,ep=2'), c, { seqLen: m.seqLen, dModel: m.dModel });
  assert.equal(Object.keys(e1.time.comm).filter((k) => k.startsWith('ep')).length, 0);
  assert.ok(Object.entries(e2.time.comm).some(([k, v]) => k.startsWith('ep all-to-all') && v > 0));
  const dpn = c.devicesPerNode.value;
  const small = 64 * 1024;
  const at = (s: string) => allToAllTime(small, parseLayout(s), c).time;
  const ep = dpn * 64;
  assert.ok(at(`dp=${ep},ep=${ep},a2a=hierarchical`) < at(`dp=${ep},ep=${ep}`));
  if (dpn > 1) assert.equal(at(`dp=${dpn},ep=${dpn},a2a=hierarchical`), at(`dp=${dpn},ep=${dpn}`));
});

test('MoE: search with ep proposes only valid layouts (ep divides the experts and dp)', () => {
  const m = moeTiny();
  const c = loadCluster('asc-8gpu');
  const r = searchLayouts(m, c, { devices: 8, globalBatch: 16, precision: 'bf16', top: 50 });
  assert.ok(r.ranked.length > 0);
  assert.ok(r.invalid > 0);
  assert.ok(r.ranked.some((x) => x.est.layout.ep > 1), 'some ranked layout uses expert parallelism');
  for (const { est } of r.ranked) {
    const l = est.layout;
    assert.equal(layoutProblem(l, m), null);
    assert.equal(m.moe.experts % l.ep, 0);
    assert.equal(l.dp % l.ep, 0);
    assert.equal(l.tp * l.pp * l.dp, 8);
    assert.ok(!(l.ep > 1 && l.tp > 1) && !l.sp, `the trainer runs neither tp × ep nor sp with MoE: ${JSON.stringify(l)}`);
    assert.ok(est.fits);
  }
  // A model with 6 experts: ep=4 and ep=8 are never proposed.
  const six: GptConfig = { ...m, moe: { ...m.moe, experts: 6 } };
  const r6 = searchLayouts(six, c, { devices: 8, globalBatch: 16, precision: 'bf16', top: 200 });
  for (const { est } of r6.ranked) assert.equal(6 % est.layout.ep, 0, `ep=${est.layout.ep}`);
});

test('MoE: bad ep and a2a fields get errors naming them', () => {
  assert.throws(() => parseLayout('a2a=ring'), /field 'a2a' must be one of flat, hierarchical, got 'ring'/);
  assert.match(layoutProblem(parseLayout('dp=3,ep=3'), moeTiny()) ?? '', /ep=3 must divide the experts \(8\) and dp \(3\)/);
  assert.match(layoutProblem(parseLayout('dp=2,ep=2'), presetConfig('gpt-tiny').model) ?? '', /ep=2 needs a mixture-of-experts model/);
});
