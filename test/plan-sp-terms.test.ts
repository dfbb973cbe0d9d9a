// Sequence parallelism in the planner (src/plan/sp-terms.ts): the collectives it counts from
// the trace are the ones the runtime's sp model issues (counted by running one rank of the
// real buildTensorParallelGpt forward + backward against a group that records its calls),
// and the estimate prices them and the sequence-axis reorders where the spec carries
// Athanor's measured tp path; elsewhere sp keeps tp's terms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate, interpLogLog } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { spCollectives, tpRegionOps } from '../src/plan/sp-terms.js';
import { GPT } from '../src/nn/gpt.js';
import { buildTensorParallelGpt } from '../src/parallel/plans/gpt.js';
import type { GroupCollectives } from '../src/ops/group.js';
import { fromStorage } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';

const tiny = { ...presetConfig('gpt-tiny').model, nLayer: 2, seqLen: 32, vocabSize: 256 };
const B = 4;
const opts = { seqLen: tiny.seqLen, dModel: tiny.dModel };
const fig = (value: number): { value: number; source: string } => ({ value, source: 'assumption: test figure' });
const pts = (s: number): [number, number][] => [[4096, 5e-5 * s], [65536, 1e-4 * s], [1 << 20, 5e-4 * s], [16 << 20, 8e-3 * s]];

/** Rank 0 of 2 whose collectives only record what they were asked to move (the values do not matter for counting). */
function recordingGroup(): GroupCollectives & { calls: { ag: number; rs: number; ar: number; gatherBytes: number; arBytes: number } } {
  const calls = { ag: 0, rs: 0, ar: 0, gatherBytes: 0, arBytes: 0 };
  return {
    rank: 0, size: 2, calls,
    allReduce(buf) { calls.ar++; calls.arBytes += buf.length * 4; },
    allGather(i, o) { calls.ag++; calls.gatherBytes += o.length * 4; o.set(i, 0); o.set(i, i.length); },
    reduceScatter(i, o) { calls.rs++; calls.gatherBytes += i.length * 4; o.set(i.subarray(0, o.length)); },
  };
}

function runtimeCalls(sp: boolean, recompute = false): ReturnType<typeof recordingGroup>['calls'] {
  const g = recordingGroup();
  const { model } = buildTensorParallelGpt(tiny, g, { seed: 1, recompute, sequenceParallel: sp });
  const ids = fromStorage(new Int32Array(B * tiny.seqLen).map((_, i) => (i * 31) % tiny.vocabSize), [B, tiny.seqLen], 'int32');
  const tg = fromStorage(new Int32Array(B * tiny.seqLen).map((_, i) => (i * 17 + 5) % tiny.vocabSize), [B, tiny.seqLen], 'int32');
  scope(() => backward(model.loss(ids, tg)));
  return g.calls;
}

test('sp-terms counts the gathers, reduce-scatters, re-gathers and gradient all-reduces the runtime issues', () => {
  const tr = traceGpt(tiny, { microBatch: B });
  const s = spCollectives(tr, () => true, 1);
  const sp = runtimeCalls(true), tp = runtimeCalls(false);
  assert.equal(s.count, sp.ag + sp.rs, `plan ${s.count} vs runtime ${sp.ag} all-gathers + ${sp.rs} reduce-scatters`);
  assert.equal(s.bytes, sp.gatherBytes, 'full-size bytes of the gathers and reduce-scatters');
  // Both layouts run the vocab-parallel loss's two per-row statistics all-reduces (not sp's).
  assert.equal(tp.ag + tp.rs, 0);
  const lossStats = tp.ar - 2 * (tiny.nLayer * 2 + 1);
  assert.equal(s.gradCount, sp.ar - lossStats, `gradient all-reduces: plan ${s.gradCount}, runtime ${sp.ar} − ${lossStats} of the loss`);
  // More than twice tp's collectives: every exit and entry becomes a pair, plus each block's re-gathers.
  assert.equal(s.count, 2 * (tp.ar - lossStats) + 2 * tiny.nLayer);
});

test('sp-terms counts the collectives of recompute=full: each recomputed exit and entry once more', () => {
  // The fused entry (ops/gather-linear.ts) inside a recomputed block: its recomputed forward
  // gathers once, its backward re-gathers and reduce-scatters as without recomputation.
  const tr = traceGpt(tiny, { microBatch: B, recompute: true });
  const s = spCollectives(tr, () => true, 1);
  const sp = runtimeCalls(true, true), plain = runtimeCalls(true, false);
  assert.equal(s.count, sp.ag + sp.rs, `plan ${s.count} vs runtime ${sp.ag} all-gathers + ${sp.rs} reduce-scatters`);
  assert.equal(s.bytes, sp.gatherBytes, 'full-size bytes of the gathers and reduce-scatters');
  // Per block: 2 exits (attention and MLP projections) and 2 fused entries, each recomputed once.
  assert.equal(sp.ag + sp.rs, plain.ag + plain.rs + 4 * tiny.nLayer);
});

function spec(copyRate?: number): ClusterSpec {
  const c = loadCluster('this-machine');
  const rates = { ...(c.device.classBandwidth?.rates ?? {}) };
  delete rates.sequenceAxisCopy;
  if (copyRate) rates.sequenceAxisCopy = copyRate;
  return {
    ...c,
    device: { ...c.device, classBandwidth: { source: 'assumption: test', rates } },
    commCpu: { alpha: fig(1e-4), beta: fig(1e9), tpSync: { source: 'assumption: test', path: 'shm', wall: pts(1), cpu: pts(0.5), skew: fig(0) } },
  };
}

test('the estimate prices sp from its own collectives and reorders (no recomputed GEMM) on the measured path only', () => {
  const tr = traceGpt(tiny, { microBatch: B });
  const sp = parseLayout(`tp=2,sp=true,mb=${B}`), tp = parseLayout(`tp=2,mb=${B}`);
  const c = spec(4e9);
  const a = estimate(tr, sp, c, opts), t = estimate(tr, tp, c, opts);
  const s = spCollectives(tr, () => true, 1);
  const want = s.count * interpLogLog(pts(1), s.bytes / s.count / 2) + s.gradCount * interpLogLog(pts(1), s.gradBytes / s.gradCount);
  assert.ok(Math.abs(a.time.comm['tp allreduce (intra)']! - want) < 1e-12, `${a.time.comm['tp allreduce (intra)']} vs ${want}`);
  const re = a.time.compute['backward:sp sequence-axis copies']!, fwd = a.time.compute['forward:sp sequence-axis copies']!;
  assert.ok(re > 0 && fwd > 0);
  // Backward: every exit's all-gather and entry's reduce-scatter reorders once, a fused entry's re-gather once more.
  assert.ok(re > fwd, `backward reorders ${re} vs forward ${fwd}`);
  const b = estimate(tr, sp, spec(8e9), opts);
  assert.ok(Math.abs(b.time.compute['forward:sp sequence-axis copies']! - fwd / 2) < 1e-12, 'twice the copy rate halves the forward reorders');
  // ... and the backward's: they are only reorders (the fused entry recomputes no GEMM: ops/gather-linear.ts).
  assert.ok(Math.abs(b.time.compute['backward:sp sequence-axis copies']! - re / 2) < 1e-12, 'twice the copy rate halves the backward reorders');
  // sp costs more than tp per step here (twice the collectives, and their reorders).
  assert.ok(a.time.busy > t.time.busy && a.time.step > t.time.step);
  // Without the measured tp path (a published cluster): no sp terms, tp's communication volume.
  const bare: ClusterSpec = { ...c, commCpu: { alpha: fig(1e-4), beta: fig(1e9) } };
  const e = estimate(tr, sp, bare, opts);
  assert.equal(e.time.compute['forward:sp sequence-axis copies'], undefined);
  assert.equal(e.time.comm['tp allreduce (intra)'], estimate(tr, tp, bare, opts).time.comm['tp allreduce (intra)']);
});

/** Non-view tape nodes of one forward (the loss's graph): what the trainer runs forward and backward. */
function tapeOps(model: { loss(i: import('../src/core/tensor.js').Tensor, t: import('../src/core/tensor.js').Tensor): import('../src/core/tensor.js').Tensor }): Map<string, number> {
  const ids = fromStorage(new Int32Array(B * tiny.seqLen).map((_, i) => (i * 31) % tiny.vocabSize), [B, tiny.seqLen], 'int32');
  const tg = fromStorage(new Int32Array(B * tiny.seqLen).map((_, i) => (i * 17 + 5) % tiny.vocabSize), [B, tiny.seqLen], 'int32');
  const byOp = new Map<string, number>();
  scope(() => {
    const seen = new Set<unknown>();
    const stack = [model.loss(ids, tg).node];
    while (stack.length) {
      const n = stack.pop();
      if (!n || seen.has(n)) continue;
      seen.add(n);
      if (!['reshape', 'permute', 'slice', 'expand'].includes(n.op)) byOp.set(n.op, (byOp.get(n.op) ?? 0) + 1);
      for (const t of n.inputs) stack.push(t.node);
    }
  });
  return byOp;
}

test('tpRegionOps counts the tape ops the tp and sp transforms add to the plain model', () => {
  const tr = traceGpt(tiny, { microBatch: B });
  const total = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
  const plain = tapeOps(new GPT(tiny, { seed: 1 }));
  for (const sp of [false, true]) {
    const tpModel = buildTensorParallelGpt(tiny, recordingGroup(), { seed: 1, recompute: false, sequenceParallel: sp }).model;
    const runtime = total(tapeOps(tpModel)) - total(plain);
    const planned = tr.ops.reduce((a, op) => a + tpRegionOps(op, tr.nBlocks, sp), 0);
    assert.equal(planned, runtime, `sp=${sp}: plan ${planned} vs runtime ${runtime} (tp ${JSON.stringify([...tapeOps(tpModel)])}, plain ${JSON.stringify([...plain])})`);
  }
  // Priced where the tp path is measured, forward and backward.
  const c = spec(4e9);
  const e = estimate(tr, parseLayout(`tp=2,sp=true,mb=${B}`), c, opts);
  assert.ok(e.time.compute['forward:tp region ops']! > 0 && e.time.compute['backward:tp region ops']! > e.time.compute['forward:tp region ops']! * 0.5);
  const bare: ClusterSpec = { ...c, commCpu: { alpha: fig(1e-4), beta: fig(1e9) } };
  assert.equal(estimate(tr, parseLayout(`tp=2,sp=true,mb=${B}`), bare, opts).time.compute['forward:tp region ops'], undefined);
});
