// Tensor parallelism's synchronous collectives in the planner (src/plan/tp-terms.ts): where
// the cluster spec carries the measured tp path (commCpu.tpSync), tp=2 is priced with its
// wall and CPU per collective plus the ranks' skew; without it, the α–β ring as before;
// bad tables are refused naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate, interpLogLog } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, validateCluster, type ClusterSpec } from '../src/plan/cluster.js';

const tiny = presetConfig('gpt-tiny').model;
const opts = { seqLen: tiny.seqLen, dModel: tiny.dModel };
const fig = (value: number): { value: number; source: string } => ({ value, source: 'assumption: test figure' });
const pts = (s: number): [number, number][] => [[4096, 5e-5 * s], [65536, 1e-4 * s], [1 << 20, 5e-4 * s], [16 << 20, 8e-3 * s]];

function spec(wallScale: number, cpuScale: number, skew: number): ClusterSpec {
  const c = loadCluster('this-machine');
  return { ...c, commCpu: { alpha: fig(1e-4), beta: fig(1e9), tpSync: { source: 'assumption: test', path: 'shm', wall: pts(wallScale), cpu: pts(cpuScale), skew: fig(skew) } } };
}

test('tp=2 on the measured synchronous path: wall per collective on the step, CPU in busy, skew as a share of compute', () => {
  const tr = traceGpt(tiny, { microBatch: 16 });
  const l = parseLayout('tp=2,mb=16');
  const a = estimate(tr, l, spec(1, 1, 0), opts);
  const compute = Object.values(a.time.compute).reduce((x, y) => x + y, 0);
  // Every tp collective of gpt-tiny carries one (B·T, C) activation or less: the table at its mean size, times the count.
  const wall = a.time.comm['tp allreduce (intra)']!;
  const one = interpLogLog(pts(1), 16 * tiny.seqLen * tiny.dModel * 4);
  assert.ok(wall > 10 * interpLogLog(pts(1), 4096) && wall < 40 * one, `tp wall ${wall}`);
  assert.equal(a.time.comm['tp rank skew at the collectives'], 0);
  // Twice the wall: the step grows by the collectives' wall, busy does not move.
  const w2 = estimate(tr, l, spec(2, 1, 0), opts);
  assert.ok(Math.abs(w2.time.step - a.time.step - wall) < 1e-9);
  assert.equal(w2.time.busy, a.time.busy);
  // Twice the CPU: busy grows, the step does not.
  const c2 = estimate(tr, l, spec(1, 2, 0), opts);
  assert.ok(c2.time.busy > a.time.busy);
  assert.equal(c2.time.step, a.time.step);
  // Skew 10%: the step grows by a tenth of the rank's compute, busy (no waiting) does not.
  const s = estimate(tr, l, spec(1, 1, 0.1), opts);
  assert.ok(Math.abs(s.time.step - a.time.step - 0.1 * compute) < 1e-9);
  assert.equal(s.time.busy, a.time.busy);
  // One process: no tp terms at all.
  assert.equal(estimate(tr, parseLayout('mb=16'), spec(1, 1, 0.1), opts).time.step, estimate(tr, parseLayout('mb=16'), spec(2, 2, 0), opts).time.step);
});

test('without commCpu.tpSync the tp collectives keep the α–β ring; a bad tpSync is refused naming the field', () => {
  const tr = traceGpt(tiny, { microBatch: 16 });
  const c = spec(1, 1, 0);
  const bare: ClusterSpec = { ...c, commCpu: { alpha: fig(1e-4), beta: fig(1e9) } };
  const e = estimate(tr, parseLayout('tp=2,mb=16'), bare, opts);
  assert.equal(e.time.comm['tp rank skew at the collectives'], undefined);
  assert.ok(e.time.comm['tp allreduce (intra)']! > 0);
  const bad = JSON.parse(JSON.stringify(c)); bad.commCpu.tpSync.wall = [[4096, 0]];
  assert.throws(() => validateCluster(bad, 'c.json'), /c\.json: field 'commCpu\.tpSync\.wall' must be a list/);
  const bad2 = JSON.parse(JSON.stringify(c)); delete bad2.commCpu.tpSync.skew.source;
  assert.throws(() => validateCluster(bad2, 'c.json'), /field 'commCpu\.tpSync\.skew\.source'/);
});
