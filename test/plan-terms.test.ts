// The planner's calibration terms: pipeline stages cut by the trainer's own partitioner,
// the schedule's allocation replay, busy time (compute + communication work, no bubble),
// the calibrated communication CPU, bf16 kernel rates and the vocab-parallel loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate, estimateMemory, pipelineMessages, scheduleReplay, stageMap } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, validateCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { gptStagePartition } from '../src/parallel/plans/gpt-pipeline.js';
import type { TraceResult } from '../src/plan/trace.js';

const tiny = presetConfig('gpt-tiny').model;
const opts = { seqLen: tiny.seqLen, dModel: tiny.dModel };
const fig = (value: number): { value: number; source: string } => ({ value, source: 'assumption: test figure' });

test('pipeline stages are the trainer\'s partition (embedding on the first rank, head on the last), chunks interleaved over ranks', () => {
  const tr = traceGpt(tiny, { microBatch: 4 });
  for (const [layout, p, v] of [['pp=2,ga=4', 2, 1], ['pp=2,ga=4,schedule=interleaved,vpp=2', 2, 2], ['pp=4,ga=4', 4, 1]] as const) {
    const sm = stageMap(tr, parseLayout(layout));
    const parts = gptStagePartition(tiny, p, v);
    assert.deepEqual(sm.parts, parts, layout);
    for (let vs = 0; vs < parts.length; vs++) {
      for (let b = parts[vs]![0]; b < parts[vs]![1]; b++) {
        assert.equal(sm.rank(b), vs % p, `${layout} block ${b}`);
        assert.equal(sm.chunk(b), Math.floor(vs / p), `${layout} block ${b}`);
      }
    }
    assert.equal(sm.rank(-1), 0);
    assert.equal(sm.rank(tiny.nLayer), (p * v - 1) % p);
  }
  // gpt-tiny's 2048-entry head outweighs a block: the trainer gives the last stage fewer layers.
  assert.ok(gptStagePartition(tiny, 2, 1)[1]![1] - gptStagePartition(tiny, 2, 1)[1]![0] < tiny.nLayer / 2);
});

test('schedule replay: the last 1F1B rank holds one micro-batch; GPipe holds every forward of its rank', () => {
  const tr = traceGpt(tiny, { microBatch: 4 });
  const all = (): boolean => true, unit = (): number => 1;
  const one = (layout: string, s: number) => {
    const l = parseLayout(layout);
    return scheduleReplay(tr, l, s, stageMap(tr, l), (b) => stageMap(tr, l).rank(b.block) === s && all(), unit)!;
  };
  // 1F1B's last stage alternates F and B: its peak is one micro-batch's.
  assert.equal(one('pp=2,ga=4', 1).peak, one('pp=2,ga=2', 1).peak);
  // GPipe on rank 0: all four forwards are live before the first backward.
  const l = parseLayout('pp=2,ga=4,schedule=gpipe');
  const sm = stageMap(tr, l);
  let live = 0, atEnd = 0;
  for (const e of tr.events) {
    if (e.t === 'mark') { if (e.what === 'forward-end') atEnd = live; continue; }
    const b = tr.buffers[e.id]!;
    if (b.kind === 'param-grad' || sm.rank(b.block) !== 0) continue;
    live += e.t === 'alloc' ? b.bytes : -b.bytes;
  }
  assert.ok(atEnd > 0);
  assert.ok(one('pp=2,ga=4,schedule=gpipe', 0).peak >= 4 * atEnd);
  // The estimate's in-flight term is that replay beyond one micro-batch.
  const g = estimateMemory(tr, l, { ...opts, allocator: 'live' });
  const f = estimateMemory(tr, parseLayout('pp=2,ga=4'), { ...opts, allocator: 'live' });
  assert.ok(g.pipelineInFlight >= 3 * atEnd - 1e-6, `${g.pipelineInFlight} vs ${3 * atEnd}`);
  assert.ok(f.pipelineInFlight < g.pipelineInFlight);
});

test('busy time: compute and communication work without the bubble; commCpu prices communication on the device', () => {
  // Without the calibrated overhead terms: their helper threads count in busy time but not in a
  // one-device step (plan-overhead.test.ts), and this test is about the bubble and communication.
  const { overhead: _overhead, ...device } = loadCluster('this-machine').device;
  const c: ClusterSpec = { ...loadCluster('this-machine'), device };
  const base: ClusterSpec = { ...c, commComputeShare: fig(1), commCpu: { alpha: fig(1e-4), beta: fig(1e9) } };
  const tr1 = traceGpt(tiny, { microBatch: 16 });
  const solo = estimate(tr1, parseLayout('mb=16'), base, opts);
  assert.ok(Math.abs(solo.time.busy - solo.time.step) < 1e-12, 'one device, no communication: busy = step');
  const tr4 = traceGpt(tiny, { microBatch: 4 });
  const pp = estimate(tr4, parseLayout('pp=2,mb=4,ga=4'), base, opts);
  assert.ok(pp.time.bubble > 0 && pp.time.busy < pp.time.step - pp.time.bubble + 1e-9);
  // Twice the CPU cost per byte and per message: busy grows, the wall step does not move.
  const dp = (cc: ClusterSpec) => estimate(tr1, parseLayout('dp=2,mb=16'), cc, opts);
  const slow = dp({ ...base, commCpu: { alpha: fig(2e-4), beta: fig(0.5e9) } }), fast = dp(base);
  assert.ok(slow.time.busy > fast.time.busy);
  assert.equal(slow.time.step, fast.time.step);
  const bad = JSON.parse(JSON.stringify(base)); bad.commCpu.beta.value = 0;
  assert.throws(() => validateCluster(bad, 'c.json'), /c\.json: field 'commCpu\.beta\.value' must be a number >= 1/);
});

test('bf16 traces use the calibrated 16-bit kernel rates; tp prices its loss at the vocab-parallel cross-entropy rate', () => {
  const c = loadCluster('this-machine');
  const rates = { elementwise: 1e9, norm: 1e9, softmax: 1e9 };
  const withLowp = (scale: number): ClusterSpec => ({ ...c, device: { ...c.device, lowpKernels: { source: 'assumption: test', attentionEfficiency: 0.2, rates: Object.fromEntries(Object.entries(rates).map(([k, v]) => [k, v * scale])) } } });
  const l16 = parseLayout('mb=16,precision=bf16');
  const tr16: TraceResult = traceGpt(tiny, { microBatch: 16, precision: 'bf16' });
  const a = estimate(tr16, l16, withLowp(1), opts), b = estimate(tr16, l16, withLowp(0.5), opts);
  assert.ok(b.time.busy > a.time.busy);
  // An fp32 trace ignores them.
  const tr32 = traceGpt(tiny, { microBatch: 16 });
  assert.equal(estimate(tr32, parseLayout('mb=16'), withLowp(1), opts).time.busy, estimate(tr32, parseLayout('mb=16'), withLowp(0.5), opts).time.busy);
  const bad = JSON.parse(JSON.stringify(withLowp(1))); bad.device.lowpKernels.rates.norm = -1;
  assert.throws(() => validateCluster(bad, 'c.json'), /field 'device\.lowpKernels\.rates\.norm' must be a positive number/);
  // The vocab-parallel loss rate moves tp=2's estimate and nothing at tp=1.
  const vp = (r: number): ClusterSpec => ({ ...c, device: { ...c.device, classBandwidth: { source: 'assumption: test', rates: { ...c.device.classBandwidth!.rates, vocabParallelCrossEntropy: r } } } });
  const tp = (r: number) => estimate(tr32, parseLayout('tp=2,mb=16'), vp(r), opts).time.busy;
  assert.ok(tp(1e8) > tp(1e9));
  assert.equal(estimate(tr32, parseLayout('mb=16'), vp(1e8), opts).time.busy, estimate(tr32, parseLayout('mb=16'), vp(1e9), opts).time.busy);
});

test('per-op rates: an op\'s own measured forward and backward rates replace its class rate (fp32 traces)', () => {
  const c = loadCluster('this-machine');
  const tr = traceGpt(tiny, { microBatch: 16 });
  const withAdd = (fwd: number, bwd: number): ClusterSpec => ({ ...c, device: { ...c.device, opRates: { source: 'assumption: test', rates: { add: { fwd, bwd } } } } });
  const t = (cc: ClusterSpec) => estimate(tr, parseLayout('mb=16'), cc, opts).time.compute;
  const a = t(withAdd(1e9, 1e9)), slowBwd = t(withAdd(1e9, 1e8));
  assert.equal(slowBwd['forward:elementwise'], a['forward:elementwise']);
  assert.ok(slowBwd['backward:elementwise']! > a['backward:elementwise']!);
  const bad = JSON.parse(JSON.stringify(withAdd(1e9, 1e9))); bad.device.opRates.rates.add.bwd = 0;
  assert.throws(() => validateCluster(bad, 'c.json'), /field 'device\.opRates\.rates\.add\.bwd' must be a positive number/);
});

test('communication CPU table: 2-rank tp all-reduces priced from the measured sizes (log–log between them)', async () => {
  const { interpLogLog } = await import('../src/plan/estimate.js');
  const pts: [number, number][] = [[4096, 5e-4], [65536, 1e-3], [1048576, 2e-3], [16777216, 1.6e-2]];
  for (const [x, y] of pts) assert.ok(Math.abs(interpLogLog(pts, x) - y) < 1e-12);
  assert.ok(Math.abs(interpLogLog(pts, 262144) - Math.sqrt(1e-3 * 2e-3)) < 1e-12);
  const c = loadCluster('this-machine');
  const base: ClusterSpec = { ...c, commComputeShare: fig(1), commCpu: { alpha: fig(1e-4), beta: fig(1e9) } };
  const tr = traceGpt(tiny, { microBatch: 16 });
  const busy = (cc: ClusterSpec) => estimate(tr, parseLayout('tp=2,mb=16'), cc, opts).time.busy;
  const cheap = busy({ ...base, commCpu: { ...base.commCpu!, allReduce2: { source: 'assumption: test', points: pts } } });
  const dear = busy({ ...base, commCpu: { ...base.commCpu!, allReduce2: { source: 'assumption: test', points: pts.map(([x, y]) => [x, 2 * y] as [number, number]) } } });
  assert.ok(dear > cheap);
  const bad = JSON.parse(JSON.stringify(base)); bad.commCpu.allReduce2 = { source: 'x', points: [[1, 2]] };
  assert.throws(() => validateCluster(bad, 'c.json'), /field 'commCpu\.allReduce2\.points' must be a list of at least two/);
});

test('pipeline messages per rank come from the schedule: 2 per micro-batch at the ends, 4 in the middle, every chunk boundary under interleaving', () => {
  for (const kind of ['gpipe', '1f1b'] as const) {
    const l = parseLayout(`pp=4,ga=8,schedule=${kind}`);
    assert.deepEqual([0, 1, 2, 3].map((r) => pipelineMessages(l, r)), [16, 32, 32, 16], kind);
  }
  // p = 2, v = 2: virtual stages 0..3 alternate ranks, so each rank crosses three boundaries
  // per micro-batch (rank 0: sends F from stage 0, F and B from stage 2; receives as many).
  assert.equal(pipelineMessages(parseLayout('pp=2,ga=4,schedule=interleaved,vpp=2'), 0), 24);
  assert.equal(pipelineMessages(parseLayout('pp=2,ga=4,schedule=interleaved,vpp=2'), 1), 24);
  assert.equal(pipelineMessages(parseLayout('pp=1,ga=4'), 0), 0);
  // The estimate prices that many messages on the busiest rank: interleaving costs 3× 1F1B's.
  const c = loadCluster('this-machine');
  const tr = traceGpt(tiny, { microBatch: 4 });
  const pp = (s: string) => Object.entries(estimate(tr, parseLayout(s), c, opts).time.comm).find(([k]) => k.startsWith('pp send/recv'))![1];
  const a = pp('pp=2,mb=4,ga=4,schedule=1f1b'), b = pp('pp=2,mb=4,ga=4,schedule=interleaved,vpp=2');
  assert.ok(Math.abs(b / a - 3) < 1e-9, `interleaved/1f1b = ${b / a}`);
});
