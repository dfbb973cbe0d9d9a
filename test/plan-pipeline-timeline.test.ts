// The planner's pipeline step is the trainer's schedule replayed with per-stage costs
// (src/plan/pipeline-timeline.ts): equal stages give the textbook step for every schedule,
// each message on the critical path adds its transfer, and an unequal stage sets the pace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pipelineStep } from '../src/plan/pipeline-timeline.js';
import { parseLayout } from '../src/plan/layout.js';
import { estimate } from '../src/plan/estimate.js';
import { traceForLayout } from '../src/plan/models.js';
import { loadCluster } from '../src/plan/cluster.js';
import { presetConfig } from '../src/train/config.js';

const LAYOUTS = ['pp=2,ga=4,schedule=gpipe', 'pp=2,ga=4,schedule=1f1b', 'pp=2,ga=4,schedule=interleaved,vpp=2', 'pp=4,ga=8,schedule=1f1b', 'pp=4,ga=8,schedule=interleaved,vpp=2'];
const chunks = (l: ReturnType<typeof parseLayout>): number => (l.schedule === 'interleaved' ? l.vpp : 1);

test('equal stages: the replayed step is m·(f+b) plus the textbook bubble (p−1)/v·(f+b)', () => {
  const f = 1, b = 2;
  for (const s of LAYOUTS) {
    const l = parseLayout(s), v = chunks(l);
    const r = pipelineStep(l, Array.from({ length: l.pp * v }, () => ({ F: f / v, B: b / v })), 0, f + b, 0)!;
    const bubble = ((l.pp - 1) / v) * (f + b);
    assert.ok(Math.abs(r.makespan - (l.ga * (f + b) + bubble)) < 1e-9, `${s}: makespan ${r.makespan}`);
    assert.ok(Math.abs(r.bubble - bubble) < 1e-9, `${s}: bubble ${r.bubble}`);
  }
});

test('message transfers on the critical path lengthen the step; GPipe with p=2 crosses the boundary twice', () => {
  const l = parseLayout('pp=2,ga=4,schedule=gpipe');
  const cost = [{ F: 1, B: 2 }, { F: 1, B: 2 }];
  const base = pipelineStep(l, cost, 0, 3, 0)!.makespan;
  // Last micro-batch: its forward crosses to rank 1, its backward back to rank 0.
  assert.ok(Math.abs(pipelineStep(l, cost, 0, 3, 0.25)!.makespan - (base + 2 * 0.25)) < 1e-9);
});

test('an unequal stage sets the pace: the step is at least m times its work, and the bubble is measured against the busiest rank', () => {
  for (const s of LAYOUTS) {
    const l = parseLayout(s), v = chunks(l), S = l.pp * v;
    // The last virtual stage (the head and the loss) costs twice the others.
    const cost = Array.from({ length: S }, (_, i) => ({ F: i === S - 1 ? 2 : 1, B: i === S - 1 ? 4 : 2 }));
    const r = pipelineStep(l, cost, 0, 0, 0)!;
    let busiest = 0;
    for (let rank = 0; rank < l.pp; rank++) {
      let w = 0;
      for (let c = 0; c < v; c++) w += cost[c * l.pp + rank]!.F + cost[c * l.pp + rank]!.B;
      busiest = Math.max(busiest, l.ga * w);
    }
    assert.ok(r.makespan >= busiest - 1e-9, `${s}: makespan ${r.makespan} < busiest rank's work ${busiest}`);
    assert.ok(Math.abs(r.bubble - (r.makespan - busiest)) < 1e-9, `${s}`);
  }
});

test('estimate: a pipeline step is the replay plus the optimizer; the busy time has no bubble', () => {
  const cluster = loadCluster('this-machine');
  const model = presetConfig('gpt-tiny').model;
  for (const s of ['pp=2,mb=4,ga=4,schedule=gpipe', 'pp=2,mb=4,ga=4,schedule=1f1b', 'pp=2,mb=4,ga=4,schedule=interleaved,vpp=2']) {
    const l = parseLayout(s);
    const e = estimate(traceForLayout(model, l, cluster.allocator), l, cluster, { seqLen: model.seqLen, dModel: model.dModel });
    assert.ok(e.time.bubble > 0, `${s}: bubble ${e.time.bubble}`);
    // Busiest rank's compute (ga micro-batches) + bubble + optimizer ≤ step (messages' CPU share and waits come on top).
    assert.ok(Math.max(...e.time.stageCompute) + e.time.bubble + e.time.optimizer <= e.time.step + 1e-9, `${s}: step ${e.time.step}`);
  }
});
