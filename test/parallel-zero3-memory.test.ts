// ZeRO-3 memory, asserted from the allocator's own counters (not timings, not RSS):
// a rank holds its parameter shard (1/dp of every unit), and beside it at most one
// gathered unit (a transformer block) plus the outer unit (embeddings, final norm),
// never the full model; AdamW state exists for the shard only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRanks } from './helpers/dist-harness.js';
import { ZERO3_MEMORY_MODEL } from './helpers/zero3-memory.js';
import { GPT } from '../src/nn/gpt.js';
import { evenCounts } from '../src/runtime/collectives.js';

interface Report {
  weights: number; grads: number; optimizer: number; gathered: number; gatherPooled: number; peakGathered: number; gatherAllocated: number; unitBound: number;
}

for (const prefetch of [false, true]) {
  // Without prefetch one block is gathered at a time; with it, the next block's gather is
  // in flight while the current one computes, so two blocks may be held at once.
  const blocksHeld = prefetch ? 2 : 1;
  test(`ZeRO-3 (dp=3${prefetch ? ', prefetch' : ''}): each rank holds its shards plus at most ${blocksHeld} gathered block(s) and the outer unit; optimizer state on the shard only`, async () => {
    const world = 3;
    // Unit sizes from the model itself, on the meta device (no storage): block i is every
    // parameter under `h.i.`; the rest (tied embedding/head, positions, final norm) is the outer unit.
    const meta = new GPT(ZERO3_MEMORY_MODEL, { device: 'meta' });
    const units = new Map<string, number>();
    for (const [n, p] of meta.namedParameters()) {
      const key = /^h\.\d+\./.exec(n)?.[0] ?? 'outer';
      units.set(key, (units.get(key) ?? 0) + p.size);
    }
    const outer = units.get('outer')!;
    const blocks = [...units].filter(([k]) => k !== 'outer').map(([, v]) => v);
    assert.equal(blocks.length, ZERO3_MEMORY_MODEL.nLayer);
    const total = outer + blocks.reduce((a, b) => a + b, 0);
    const largest = Math.max(...blocks);

    const outs = await runRanks({ world, env: { DIST_MODE: 'zero3-memory', ZERO3_PREFETCH: prefetch ? '1' : '0' }, timeoutMs: 240_000 });
    let shardSum = 0;
    for (const o of outs) {
      assert.equal(o.code, 0, `rank ${o.rank}: ${o.stderr.slice(-3000)}`);
      const r = o.result!;
      const m = r.report as Report;
      // Each unit is split evenly over the ranks: this rank's share of every unit.
      const share = [outer, ...blocks].reduce((s, n) => s + evenCounts(n, world)[o.rank]!, 0);
      assert.equal(m.weights, 4 * share, `rank ${o.rank}: parameter storage is the shard`);
      shardSum += m.weights;
      // The gather allocator never lent more than blocksHeld blocks plus the outer unit at once,
      // and never allocated more than that in all (buffers are reused, not accumulated).
      assert.equal(m.unitBound, 4 * (blocksHeld * largest + outer));
      assert.ok(m.peakGathered > 0, `rank ${o.rank}: gathers were counted`);
      assert.ok(m.peakGathered <= 4 * (blocksHeld * largest + outer), `rank ${o.rank}: peak gathered ${m.peakGathered} B > blocks + outer unit ${4 * (blocksHeld * largest + outer)} B`);
      assert.ok(m.gatherAllocated <= 4 * (blocksHeld * largest + outer), `rank ${o.rank}: gather buffers allocated ${m.gatherAllocated} B > blocks + outer unit`);
      assert.equal(m.gathered, 0, `rank ${o.rank}: every unit is released between steps`);
      assert.ok(m.peakGathered < 4 * total, `rank ${o.rank}: never the full model`);
      // AdamW: two moments per shard element, nothing for the rest of the model.
      assert.equal(m.optimizer, 2 * m.weights, `rank ${o.rank}: AdamW state covers the shard only`);
      // No parameter keeps storage outside a gather: after construction, each step and evaluation.
      assert.equal(r.heldAfterBuild, 0, `rank ${o.rank}: the model was never built in full`);
      assert.deepEqual(r.heldAfterStep, [0, 0, 0]);
      assert.equal(r.heldAfterEval, 0);
      // The run trained (each rank its own batches; losses are compared with dp=1 in parallel-dp).
      for (const l of r.losses as number[]) assert.ok(Number.isFinite(l));
    }
    assert.equal(shardSum, 4 * total, 'the shards partition the model');
  });
}
