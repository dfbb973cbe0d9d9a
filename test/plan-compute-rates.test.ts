// The planner's compute rates (src/plan/compute-rates.ts): GEMMs priced by role (forward
// NT, input gradient NN, weight gradient TN), attention by shape and phase (a recomputed
// forward at the forward rate), the optimizer at its own measured rate, and the
// calibration's interleaved rounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, validateCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { ADAMW_BYTES, attentionEfficiencyFn, gemmRateFn, optimizerSeconds, type GemmPoint } from '../src/plan/compute-rates.js';
import { attentionTable, interleaved, opPairRates, optimizerRate } from '../src/plan/calibrate-compute.js';
import { fromStorage } from '../src/core/tensor.js';
import { reshape, slice } from '../src/ops/index.js';

const tiny = presetConfig('gpt-tiny').model;
const opts = { seqLen: tiny.seqLen, dModel: tiny.dModel };
// Without the calibrated framework-overhead terms (tested in plan-overhead.test.ts), so the
// figures below are the compute rates alone, whatever this machine's file holds.
const { overhead: _overhead, ...device } = loadCluster('this-machine').device;
const base: ClusterSpec = { ...loadCluster('this-machine'), device };
const grid = (rate: number): GemmPoint[] => [[512, 512, 512, rate], [2048, 2048, 2048, rate]];
const withDevice = (d: Partial<ClusterSpec['device']>): ClusterSpec => ({ ...base, device: { ...base.device, ...d } });

test('GEMM roles: the backward GEMMs read their own tables where measured, else the forward table, else peak × efficiency', () => {
  const c = withDevice({ gemmTable: { source: 'assumption: test', points: grid(4e10), nn: grid(2e10), tn: grid(1e10) } });
  const r = gemmRateFn(c, 1e11);
  assert.equal(r(512, 512, 512), 4e10);
  assert.equal(r(512, 512, 512, 'gradA'), 2e10);
  assert.equal(r(512, 512, 512, 'gradB'), 1e10);
  // Between two points of equal rate the interpolation is that rate.
  assert.ok(Math.abs(r(1024, 1024, 1024, 'gradA') / 2e10 - 1) < 1e-12);
  const ntOnly = gemmRateFn(withDevice({ gemmTable: { source: 'assumption: test', points: grid(4e10) } }), 1e11);
  assert.equal(ntOnly(512, 512, 512, 'gradB'), 4e10);
  const none = withDevice({ gemmTable: undefined, gemmEfficiency: { value: 0.5, source: 'assumption: test' } });
  assert.equal(gemmRateFn(none, 1e11)(100, 100, 100, 'gradA'), 5e10);
  // Slower backward tables make the traced backward GEMMs, and nothing else, slower.
  const tr = traceGpt(tiny, { microBatch: 4 });
  const l = parseLayout('mb=4');
  const a = estimate(tr, l, withDevice({ gemmTable: { source: 'assumption: test', points: grid(4e10), nn: grid(4e10), tn: grid(4e10) } }), opts);
  const b = estimate(tr, l, c, opts);
  assert.equal(a.time.compute['forward:gemm'], b.time.compute['forward:gemm']);
  const gemmFlops = (phase: string) => tr.ops.filter((o) => o.cls === 'gemm' && o.phase === phase).reduce((s, o) => s + o.flops, 0);
  // Half the backward FLOPs at 2e10, half at 1e10, instead of all at 4e10: 3× the time (less the per-op overhead).
  const ovh = tr.ops.filter((o) => o.cls === 'gemm' && o.phase === 'backward').length * base.device.opOverhead.value;
  assert.ok(Math.abs((b.time.compute['backward:gemm']! - ovh) / (gemmFlops('backward') / 2 / 2e10 + gemmFlops('backward') / 2 / 1e10) - 1) < 1e-9);
  assert.ok(Math.abs((a.time.compute['backward:gemm']! - ovh) / (gemmFlops('backward') / 4e10) - 1) < 1e-9);
});

test('attention: forward and backward efficiencies by [T, D]; a recomputed forward is priced at the forward rate', () => {
  const table: [number, number, number, number][] = [[128, 32, 0.2, 0.4], [128, 64, 0.3, 0.6], [512, 32, 0.2, 0.4], [512, 64, 0.3, 0.6]];
  const c = withDevice({ attentionTable: { source: 'assumption: test', points: table } });
  const eff = attentionEfficiencyFn(c, false);
  assert.equal(eff([8, 128, 128, 64], 'forward'), 0.3);
  assert.equal(eff([8, 128, 128, 64], 'backward'), 0.6);
  // Between measured shapes: between their rates, nearer the nearer ones.
  const mid = eff([8, 256, 256, 32], 'forward');
  // An op traced without dims: the one efficiency.
  assert.equal(eff(undefined, 'forward'), base.device.attentionEfficiency.value);
  assert.ok(mid > 0.2 && mid < 0.25, String(mid));
  // Without a table: the one efficiency for both phases.
  const one = attentionEfficiencyFn(withDevice({ attentionTable: undefined, attentionEfficiency: { value: 0.45, source: 'assumption: test' } }), false);
  assert.equal(one([8, 128, 128, 32], 'forward'), 0.45);
  assert.equal(one([8, 128, 128, 32], 'backward'), 0.45);
  const tr = traceGpt(tiny, { microBatch: 4, recompute: true });
  const e = estimate(tr, parseLayout('mb=4,recompute=full'), c, opts);
  assert.ok(e.time.compute['recompute:attention']! > 0);
  assert.ok(Math.abs(e.time.compute['recompute:attention']! / e.time.compute['forward:attention']! - 1) < 1e-12);
  // Backward does 2× the forward FLOPs at 2× the efficiency here: the same time.
  assert.ok(Math.abs(e.time.compute['backward:attention']! / e.time.compute['forward:attention']! - 1) < 1e-12);
  const bad = JSON.parse(JSON.stringify(c)); bad.device.attentionTable.points[1] = [128, 64, 0.3];
  assert.throws(() => validateCluster(bad, 'c.json'), /c\.json: field 'device\.attentionTable\.points' must be a non-empty list of \[T, D, forwardEfficiency, backwardEfficiency\]/);
});

test('the optimizer step is priced at its measured rate (AdamW bytes per second), else at memory bandwidth', () => {
  const c = withDevice({ optimizerRate: { value: 1e10, source: 'assumption: test' } });
  assert.equal(optimizerSeconds(c, 1e6), (1e6 * ADAMW_BYTES) / 1e10);
  const noRate = withDevice({ optimizerRate: undefined });
  assert.equal(optimizerSeconds(noRate, 1e6), (1e6 * ADAMW_BYTES) / base.device.memBandwidth.value);
  const tr = traceGpt(tiny, { microBatch: 4 });
  const l = parseLayout('mb=4');
  const params = tr.params.reduce((s, p) => s + p.numel, 0);
  assert.ok(Math.abs(estimate(tr, l, c, opts).time.optimizer / ((params * ADAMW_BYTES) / 1e10) - 1) < 1e-12);
  // ZeRO-1 over dp=2: each rank updates half.
  assert.ok(Math.abs(estimate(tr, parseLayout('mb=4,dp=2,zero=1'), c, opts).time.optimizer / ((params * ADAMW_BYTES) / 2e10) - 1) < 1e-12);
  const bad = JSON.parse(JSON.stringify(c)); bad.device.optimizerRate.value = 0;
  assert.throws(() => validateCluster(bad, 'c.json'), /c\.json: field 'device\.optimizerRate\.value' must be a number >= 1/);
  const badNn = JSON.parse(JSON.stringify(withDevice({ gemmTable: { source: 'assumption: test', points: grid(1e10), nn: [[1, 2, 3, -1]] } })));
  assert.throws(() => validateCluster(badNn, 'c.json'), /field 'device\.gemmTable\.nn' must be a non-empty list of \[m, n, k, flopsPerSec\]/);
});

test('calibration rounds interleave the jobs: one untimed round, then one rep of every job per round, the median kept', () => {
  const order: number[] = [];
  const ts = interleaved([0, 1, 2].map((i) => () => { order.push(i); }), 3);
  assert.equal(ts.length, 3);
  assert.deepEqual(order, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
  for (const t of ts) assert.ok(t > 0);
  // A job that timed part of itself (a backward after its forward) reports that part; the median over rounds.
  let r = 0;
  assert.deepEqual(interleaved([() => [0.5, 0.1, 0.3, 0.2][r++]!], 3), [0.2]);
});

test('calibration measurements: attention by [T, D] with both phases, the optimizer step, an op pair with two outputs', () => {
  const att = attentionTable(5e10, 1);
  assert.equal(att.length, 9);
  for (const [T, D, f, b] of att) {
    assert.ok([128, 256, 512].includes(T) && [32, 64, 128].includes(D), `${T}/${D}`);
    assert.ok(f > 0 && Number.isFinite(f) && b > 0 && Number.isFinite(b), `${T}/${D}: ${f} ${b}`);
  }
  const opt = optimizerRate(1);
  assert.ok(opt > 0 && Number.isFinite(opt));
  const x = fromStorage(new Float32Array(4096).fill(0.5), [64, 64], 'float32');
  const r = opPairRates({ split: { bytes: 2 * 4 * 4096, inputs: [x], fn: (t) => [slice(t!, 1, 0, 32), slice(t!, 1, 32, 64)].map((s) => reshape(s, [64 * 32])) } }, 1);
  assert.ok(r.split!.fwd > 0 && r.split!.bwd > 0);
});
