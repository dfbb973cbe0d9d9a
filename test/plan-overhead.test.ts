// The planner's framework-overhead terms (src/plan/overhead-terms.ts): per traced op by
// phase, the co-running devices' slowdown, their validation, and the calibration
// measurement of the per-op cost on a real model (no timing asserted: only that it is
// measured, positive and per counted op).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, validateCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { coRunFactor, coRunning, helperCpuPerOp, opFixedSeconds, pipelineActionSeconds } from '../src/plan/overhead-terms.js';
import { opFixedCosts, pipelineActionCost } from '../src/plan/calibrate-overhead.js';

const tiny = presetConfig('gpt-tiny').model;
const opts = { seqLen: tiny.seqLen, dModel: tiny.dModel };
const fig = (value: number): { value: number; source: string } => ({ value, source: 'assumption: test figure' });

function withOverhead(c: ClusterSpec, fwd: number, bwd: number, coRun?: [number, number][]): ClusterSpec {
  return { ...c, device: { ...c.device, overhead: { source: 'assumption: test figures', opForward: fig(fwd), opBackward: fig(bwd), ...(coRun ? { coRun: { source: 'assumption: test figures', points: coRun } } : {}) } } };
}

test('per-op fixed cost: each traced non-view op adds its phase\'s figure; without the field, device.opOverhead', () => {
  const base = loadCluster('this-machine');
  const c0 = withOverhead(base, 0, 0);
  const tr = traceGpt(tiny, { microBatch: 4 });
  const l = parseLayout('dp=1,mb=4');
  const fwdOps = tr.ops.filter((o) => o.cls !== 'view' && o.phase !== 'backward').length;
  const bwdOps = tr.ops.filter((o) => o.cls !== 'view' && o.phase === 'backward').length;
  const s0 = estimate(tr, l, c0, opts).time.step;
  const s1 = estimate(tr, l, withOverhead(base, 1e-3, 0), opts).time.step;
  const s2 = estimate(tr, l, withOverhead(base, 0, 1e-3), opts).time.step;
  assert.ok(Math.abs(s1 - s0 - fwdOps * 1e-3) < 1e-9, `forward: ${s1 - s0} vs ${fwdOps} ops`);
  assert.ok(Math.abs(s2 - s0 - bwdOps * 1e-3) < 1e-9, `backward: ${s2 - s0} vs ${bwdOps} ops`);
  const { overhead: _o, ...dev } = base.device;
  const old = { ...base, device: dev };
  assert.equal(opFixedSeconds(old, 'forward'), base.device.opOverhead.value);
  assert.equal(opFixedSeconds(withOverhead(base, 2, 3), 'recompute'), 2);
  assert.equal(opFixedSeconds(withOverhead(base, 2, 3), 'backward'), 3);
});

test('co-running slowdown: 1 alone, interpolated in the devices that compute at once, applied to multi-rank layouts only', () => {
  const base = loadCluster('this-machine');
  const c = withOverhead(base, 0, 0, [[4, 1.3]]);
  assert.equal(coRunFactor(c, 1), 1);
  assert.ok(Math.abs(coRunFactor(c, 2) - 1.1) < 1e-12);
  assert.equal(coRunFactor(c, 8), 1.3);
  assert.equal(coRunFactor(withOverhead(base, 0, 0), 4), 1);
  const node2 = { ...c, devicesPerNode: fig(2) };
  assert.equal(coRunning(parseLayout('dp=1'), node2), 1);
  assert.equal(coRunning(parseLayout('dp=4'), node2), 2);
  const tr = traceGpt(tiny, { microBatch: 4 });
  const noCo = withOverhead(base, 0, 0), co = withOverhead(base, 0, 0, [[2, 1.25]]);
  const one = parseLayout('dp=1,mb=4');
  assert.equal(estimate(tr, one, co, opts).time.step, estimate(tr, one, noCo, opts).time.step);
  const two = parseLayout('dp=2,mb=4');
  const a = estimate(tr, two, { ...noCo, devicesPerNode: fig(2) }, opts), b = estimate(tr, two, { ...co, devicesPerNode: fig(2) }, opts);
  const sum = (r: Record<string, number>): number => Object.values(r).reduce((x, y) => x + y, 0);
  assert.ok(Math.abs(sum(b.time.compute) - 1.25 * sum(a.time.compute)) < 1e-9 * sum(a.time.compute));
  assert.ok(b.time.step > a.time.step);
});

test('pipeline: the engine\'s per-action cost enters every action of the schedule replay', () => {
  const base = loadCluster('this-machine');
  const tr = traceGpt(tiny, { microBatch: 4 });
  for (const layout of ['pp=2,mb=4,ga=4,schedule=gpipe', 'pp=2,mb=4,ga=4,schedule=1f1b', 'pp=2,mb=4,ga=4,schedule=interleaved,vpp=2']) {
    const l = parseLayout(layout);
    const c0 = withOverhead(base, 0, 0), c1 = { ...c0, device: { ...c0.device, overhead: { ...c0.device.overhead!, pipelineAction: fig(0.01) } } };
    assert.equal(pipelineActionSeconds(c0), 0);
    const d = estimate(tr, l, c1, opts).time.step - estimate(tr, l, c0, opts).time.step;
    // The busiest rank runs 2·ga·v actions, each 10 ms longer: the makespan grows by at least that.
    const v = l.schedule === 'interleaved' ? l.vpp : 1;
    assert.ok(d >= 2 * l.ga * v * 0.01 - 1e-9, `${layout}: +${d} s`);
  }
  assert.ok(pipelineActionCost(1) >= 0);
});

test('helper threads: their CPU per traced op adds to the busy time of one rank, and to the wall step where the ranks fill the node', () => {
  const base = loadCluster('this-machine');
  const tr = traceGpt(tiny, { microBatch: 4 });
  const ops = tr.ops.filter((o) => o.cls !== 'view').length;
  const l = parseLayout('dp=1,mb=4');
  const c0 = withOverhead(base, 0, 0), c1 = { ...c0, device: { ...c0.device, overhead: { ...c0.device.overhead!, helperCpuPerOp: fig(1e-4) } } };
  assert.equal(helperCpuPerOp(c0), 0);
  const a = estimate(tr, l, c0, opts), b = estimate(tr, l, c1, opts);
  assert.equal(b.time.step, a.time.step);
  assert.ok(Math.abs(b.time.busy - a.time.busy - ops * 1e-4) < 1e-9, `${b.time.busy - a.time.busy} vs ${ops} ops`);
  // Ranks on every core of the node: no idle core is left, the helpers' CPU is in the wall step (once, not again in busy).
  const two = parseLayout('dp=2,mb=4');
  const n2 = (x: ClusterSpec): ClusterSpec => ({ ...x, devicesPerNode: fig(2) });
  const a2 = estimate(tr, two, n2(c0), opts), b2 = estimate(tr, two, n2(c1), opts);
  const sum = (r: Record<string, number>): number => Object.values(r).reduce((x, y) => x + y, 0);
  assert.ok(Math.abs(sum(b2.time.compute) - sum(a2.time.compute) - ops * 1e-4) < 1e-9);
  assert.ok(Math.abs(b2.time.busy - a2.time.busy - ops * 1e-4) < 1e-9);
});

test('device.overhead: bad figures are refused naming the field', () => {
  const base = loadCluster('this-machine');
  const bad = (o: unknown, field: string) => assert.throws(() => validateCluster({ ...base, device: { ...base.device, overhead: o } }, 'x.json'), new RegExp(`x.json: field '${field.replace(/\./g, '\\.')}`));
  bad({ source: 'assumption: test', opForward: fig(-1), opBackward: fig(0) }, 'device.overhead.opForward.value');
  bad({ source: 'assumption: test', opForward: fig(0) }, 'device.overhead.opBackward.value');
  bad({ source: 'assumption: test', opForward: fig(0), opBackward: fig(0), coRun: { source: 'assumption: test', points: [[0, 1]] } }, 'device.overhead.coRun.points');
  bad({ opForward: fig(0), opBackward: fig(0) }, 'device.overhead.source');
  bad({ source: 'assumption: test', opForward: fig(0), opBackward: fig(0), pipelineAction: fig(-1) }, 'device.overhead.pipelineAction.value');
  bad({ source: 'assumption: test', opForward: fig(0), opBackward: fig(0), helperCpuPerOp: fig(-0.1) }, 'device.overhead.helperCpuPerOp.value');
  assert.doesNotThrow(() => validateCluster(withOverhead(base, 1e-5, 2e-5, [[2, 1.1]]), 'ok.json'));
});

test('calibration: the per-op cost is measured on a real model and divided over the ops its trace counts', () => {
  const r = opFixedCosts(1);
  assert.ok(r.opsForward > 10 && r.opsBackward > 10, JSON.stringify(r));
  assert.ok(r.forward > 0 && r.backward > 0 && r.forward < 0.01 && r.backward < 0.01, JSON.stringify(r));
});
