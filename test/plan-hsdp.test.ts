// The planner's ZeRO-3 memory and communication model for Athanor's runtime: HSDP
// (shardGroup) layouts, offload=disk, and the units ZeRO-3 gathers (the measured check
// against real runs is in parallel-zero3-peak.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { traceForLayout } from '../src/plan/models.js';
import { estimate, estimateMemory } from '../src/plan/estimate.js';
import { parseLayout, layoutProblem, layoutString } from '../src/plan/layout.js';
import { loadCluster } from '../src/plan/cluster.js';
import { DEFAULT_CHUNK } from '../src/parallel/offload-store.js';
import { ZERO_PEAK_MODEL } from './helpers/zero-peak.js';
import { GPT } from '../src/nn/gpt.js';

const m = ZERO_PEAK_MODEL;
const mem = (s: string) => {
  const l = parseLayout(s);
  return estimateMemory(traceForLayout(m, l, 'athanor-pool'), l, { seqLen: m.seqLen, dModel: m.dModel, allocator: 'athanor-pool' });
};

test('shardGroup in layouts: parsed, printed, and refused without zero=3 or when it does not divide dp', () => {
  const l = parseLayout('dp=4,zero=3,shardGroup=2');
  assert.equal(l.shardGroup, 2);
  assert.match(layoutString(l), /shardGroup=2/);
  const model = { nHead: m.nHead, nLayer: m.nLayer, dFF: m.dFF };
  assert.equal(layoutProblem(l, model), null);
  assert.match(layoutProblem(parseLayout('dp=4,zero=2,shardGroup=2'), model)!, /shardGroup=2 \(HSDP\) needs zero=3/);
  assert.match(layoutProblem(parseLayout('dp=4,zero=3,shardGroup=3'), model)!, /shardGroup=3 must divide dp=4/);
});

test('ZeRO-3 per rank: own shard + 2U + O weights, own + 2U gradients (U the largest unit, untied V×C), HSDP as ZeRO-3 over the shard group', () => {
  const meta = new GPT(m, { device: 'meta' });
  let P = 0, block = 0, O = 0;
  const V = m.vocabSize * m.dModel;
  for (const [n, p] of meta.namedParameters()) {
    P += p.size;
    if (n.startsWith('h.0.')) block += p.size;
    else if (!n.startsWith('h.') && n !== 'wte.weight' && n !== 'lm_head.weight') O += p.size;
  }
  const U = Math.max(block, V);
  for (const dp of [2, 4]) {
    const e = mem(`dp=${dp},zero=3`);
    assert.equal(e.weights, 4 * P / dp);
    assert.equal(e.grads, 4 * P / dp + 8 * U);
    assert.equal(e.gatherBuffers, 4 * (2 * U + O));
    assert.equal(e.optimizer, 8 * P / dp);
    assert.equal(e.commBuffers, 0, 'the staging pair is the 2U of gradients: no bucket copies');
  }
  const h = mem('dp=4,zero=3,shardGroup=2'), d2 = mem('dp=2,zero=3');
  assert.equal(h.total, d2.total);
  assert.equal(mem('dp=4,zero=3,shardGroup=4').total, mem('dp=4,zero=3').total);
});

test('offload=disk: the master and moments go to the file, memory keeps two chunk buffers', () => {
  const a = mem('dp=2,zero=3'), b = mem('dp=2,zero=3,offload=disk');
  assert.equal(b.diskOffload, a.optimizer / 8 * 12);
  assert.equal(b.optimizer, 2 * 12 * DEFAULT_CHUNK);
  assert.equal(b.total, a.total - a.optimizer + b.optimizer);
  assert.equal(b.hostOffload, 0);
});

test('HSDP communication: reduce-scatter and gathers over the shard group, all-reduce over the replicas', () => {
  const c = loadCluster('this-machine');
  const l = parseLayout('dp=4,zero=3,shardGroup=2');
  const e = estimate(traceForLayout(m, l, 'athanor-pool'), l, c, { seqLen: m.seqLen, dModel: m.dModel });
  const keys = Object.keys(e.time.comm);
  assert.ok(keys.some((k) => k.startsWith('dp gradients over shardGroup=2')), keys.join(', '));
  assert.ok(keys.some((k) => k.startsWith('dp replica all-reduce over 2 groups')), keys.join(', '));
  const plain = parseLayout('dp=4,zero=3');
  const e4 = estimate(traceForLayout(m, plain, 'athanor-pool'), plain, c, { seqLen: m.seqLen, dModel: m.dModel });
  assert.ok(!Object.keys(e4.time.comm).some((k) => k.includes('replica')));
});
