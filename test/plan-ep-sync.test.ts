// Expert parallelism's synchronous exchanges in the planner (src/plan/ep-terms.ts
// epSyncTerms): where the cluster spec carries the measured ep path (commCpu.epSync,
// written by `athanor plan --calibrate`), ep=2 is priced with its wall and CPU per exchange
// (4 row exchanges and 1 count exchange per MoE layer per micro-batch) plus the ranks'
// skew; without it, the α–β model as before; bad tables are refused naming the field. And
// the row exchanges' staging pair, sized from the row capacity as the runtime sizes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate, interpLogLog } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, validateCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { epHelperStall, epStagingBytes } from '../src/plan/ep-terms.js';
import { capacityRows } from '../src/parallel/expert-parallel-capacity.js';

const moe = presetConfig('moe-tiny').model;
const opts = { seqLen: moe.seqLen, dModel: moe.dModel };
const fig = (value: number): { value: number; source: string } => ({ value, source: 'assumption: test figure' });
const pts = (s: number): [number, number][] => [[4096, 5e-5 * s], [65536, 1e-4 * s], [1 << 20, 5e-4 * s], [16 << 20, 8e-3 * s]];

function spec(wallScale: number, cpuScale: number, skew: number, withEp = true): ClusterSpec {
  const c = loadCluster('this-machine');
  const base = { alpha: fig(1e-4), beta: fig(1e9) };
  return { ...c, commCpu: withEp ? { ...base, epSync: { source: 'assumption: test', wall: pts(wallScale), cpu: pts(cpuScale), skew: fig(skew) } } : base };
}

test('ep=2 on the measured synchronous path: wall per exchange on the step, CPU in busy, skew as a share of compute', () => {
  const tr = traceGpt(moe, { microBatch: 4 });
  const l = parseLayout('dp=2,ep=2,mb=4,epLoad=1.25');
  const a = estimate(tr, l, spec(1, 1, 0), opts);
  const layers = tr.ops.filter((op) => op.op === 'moeDispatch' && op.phase === 'forward');
  assert.ok(layers.length > 0);
  // The busiest rank's rows (epLoad × the dispatched rows) in 4 exchanges, the counts (under 4 KiB: the table's first point) in one.
  const rowBytes = 1.25 * tr.buffers[layers[0]!.out]!.bytes;
  const want = layers.length * (4 * interpLogLog(pts(1), rowBytes) + pts(1)[0]![1]);
  const wall = a.time.comm['ep all-to-all (flat, intra)']!;
  assert.ok(Math.abs(wall - want) < 1e-12, `ep wall ${wall} vs ${want}`);
  assert.equal(a.time.comm['ep rank skew at the exchanges'], 0);
  // Twice the wall: the step grows by the exchanges' wall, busy does not move.
  const w2 = estimate(tr, l, spec(2, 1, 0), opts);
  assert.ok(Math.abs(w2.time.step - a.time.step - wall) < 1e-9);
  assert.equal(w2.time.busy, a.time.busy);
  // Twice the CPU: busy grows by the exchanges' CPU (same shape as the wall table here), the step does not.
  const c2 = estimate(tr, l, spec(1, 2, 0), opts);
  assert.ok(Math.abs(c2.time.busy - a.time.busy - want) < 1e-9);
  assert.equal(c2.time.step, a.time.step);
  // Skew 10%: the step grows by a tenth of the rank's compute; busy (no waiting) does not.
  const compute = Object.values(a.time.compute).reduce((x, y) => x + y, 0);
  const s = estimate(tr, l, spec(1, 1, 0.1), opts);
  assert.ok(Math.abs(s.time.step - a.time.step - 0.1 * compute) < 1e-9);
  assert.equal(s.time.busy, a.time.busy);
  // Without the table: the α–β all-to-all, no skew term.
  const ab = estimate(tr, l, spec(1, 1, 0.1, false), opts);
  assert.equal(ab.time.comm['ep rank skew at the exchanges'], undefined);
  assert.notEqual(ab.time.comm['ep all-to-all (flat, intra)'], wall);
});

test('a bad commCpu.epSync is refused naming the field', () => {
  const c = JSON.parse(JSON.stringify(spec(1, 1, 0)));
  const bad = JSON.parse(JSON.stringify(c)); bad.commCpu.epSync.cpu = [[4096, -1]];
  assert.throws(() => validateCluster(bad, 'c.json'), /c\.json: field 'commCpu\.epSync\.cpu' must be a list/);
  const bad2 = JSON.parse(JSON.stringify(c)); delete bad2.commCpu.epSync.skew.source;
  assert.throws(() => validateCluster(bad2, 'c.json'), /field 'commCpu\.epSync\.skew\.source'/);
  assert.doesNotThrow(() => validateCluster(c, 'c.json'));
});

test("ep staging: two shared buffers of max(capacity, S) rows of C floats (the runtime's bound), growing with epLoad's capacity", () => {
  const tr = traceGpt(moe, { microBatch: 4 });
  const d = tr.ops.find((op) => op.op === 'moeDispatch' && op.phase === 'forward')!;
  const [S, C] = tr.buffers[d.out]!.shape as [number, number];
  const c = loadCluster('this-machine');
  for (const load of [1, 1.438, 2]) {
    const m = estimate(tr, parseLayout(`dp=2,ep=2,mb=4,epLoad=${load}`), c, opts).memory;
    assert.equal(m.commBuffers, epStagingBytes(tr, load, () => true));
    assert.equal(m.commBuffers, 2 * Math.max(capacityRows(Math.ceil(S * load)), S) * C * 4);
  }
  assert.ok(epStagingBytes(tr, 2, () => true) > epStagingBytes(tr, 1, () => true));
});

test("ep=2 with every core of the node taken: the other rank's helper threads stall the group at the exchanges (step, not busy)", () => {
  const tr = traceGpt(moe, { microBatch: 4 });
  const l = parseLayout('dp=2,ep=2,mb=4,ga=2');
  const base = spec(1, 1, 0);
  const withHelpers = (h: number, cores: number): ClusterSpec => ({ ...base, devicesPerNode: fig(cores), device: { ...base.device, overhead: { ...base.device.overhead!, helperCpuPerOp: fig(h) } } });
  const key = "ep: other ranks' helper threads at the exchanges";
  const ops = tr.ops.filter((op) => op.cls !== 'view').length;
  const none = estimate(tr, l, withHelpers(0, 2), opts), h = 1e-3;
  const full = estimate(tr, l, withHelpers(h, 2), opts);
  assert.equal(none.time.comm[key], undefined);
  // ga micro-batches × (ep − 1) other ranks × the traced ops × the helpers' seconds per op.
  assert.ok(Math.abs(full.time.comm[key]! - 2 * 1 * ops * h) < 1e-12, `${full.time.comm[key]} vs ${2 * ops * h}`);
  // The step takes the rank's own helpers (in its compute) and the other rank's (this term): twice ops·h per micro-batch.
  assert.ok(Math.abs(full.time.step - none.time.step - 2 * 2 * ops * h) < 1e-9, `step grew by ${full.time.step - none.time.step}`);
  // Busy (the rank's own CPU: its helpers are in it) has no waiting: it does not take the other rank's.
  assert.ok(Math.abs(full.time.busy - none.time.busy - 2 * ops * h) < 1e-9, `busy grew by ${full.time.busy - none.time.busy}`);
  // A spare core on the node (4 cores, 2 ranks) runs the helpers: no stall.
  assert.equal(estimate(tr, l, withHelpers(h, 4), opts).time.comm[key], undefined);
  // Without the measured synchronous path (no commCpu.epSync) the term is not priced.
  const noSync: ClusterSpec = { ...withHelpers(h, 2), commCpu: spec(1, 1, 0, false).commCpu };
  assert.equal(estimate(tr, l, noSync, opts).time.comm[key], undefined);
});

test('epHelperStall: (ep − 1) × ops × seconds per op, nothing without ep', () => {
  assert.equal(epHelperStall(2, 100, 1e-4), 100 * 1e-4);
  assert.equal(epHelperStall(4, 100, 1e-4), 3 * 100 * 1e-4);
  assert.equal(epHelperStall(1, 100, 1e-4), 0);
  assert.equal(epHelperStall(2, 100, 0), 0);
});
