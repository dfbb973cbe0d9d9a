// Pipeline parallelism, single-process parts: schedules (order, deadlock freedom, bubble
// against theory), stage partitioning, and the GPT stage plan (a rank's stages hold
// exactly the single-process model's initial parameters, and chaining the stages'
// forwards and backwards reproduces GPT.loss and its gradients).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rankActions, simulate, theoreticalBubble, scheduleShapeError, type ScheduleShape } from '../src/parallel/pipeline/schedule.js';
import { partitionLayers, stageCosts } from '../src/parallel/pipeline/partition.js';
import { GptPipelineStages, gptStagePartition } from '../src/parallel/plans/gpt-pipeline.js';
import { GPT } from '../src/nn/gpt.js';
import type { GptConfig } from '../src/nn/gpt-config.js';
import { fromStorage, full, type Tensor } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';
import { Rng } from '../src/core/rng.js';

test('every schedule runs each micro-batch forward then backward once per chunk, and never deadlocks', () => {
  const shapes: ScheduleShape[] = [];
  for (const p of [1, 2, 3, 4]) {
    for (const m of [1, 2, 4, 6, 8]) {
      shapes.push({ kind: 'gpipe', p, m, v: 1 });
      if (m >= p) shapes.push({ kind: '1f1b', p, m, v: 1 });
      for (const v of [2, 3]) if (m % p === 0) shapes.push({ kind: 'interleaved', p, m, v });
    }
  }
  for (const s of shapes) {
    for (let r = 0; r < s.p; r++) {
      const acts = rankActions(s, r);
      assert.equal(acts.length, 2 * s.m * s.v, `${JSON.stringify(s)} rank ${r}`);
      const fwd = new Set<string>();
      for (const a of acts) {
        const k = `${a.micro}:${a.chunk}`;
        if (a.kind === 'F') { assert.ok(!fwd.has(k)); fwd.add(k); } else assert.ok(fwd.has(k), `${JSON.stringify(s)} rank ${r}: backward ${k} before forward`);
      }
    }
    const sim = simulate(s); // throws on deadlock
    assert.ok(sim.makespan > 0);
  }
});

test('simulated bubble equals (p-1)/(m+p-1), divided down by v when interleaved; 1F1B holds fewer activations than GPipe', () => {
  for (const [kind, p, m, v] of [['gpipe', 4, 4, 1], ['gpipe', 2, 8, 1], ['1f1b', 2, 2, 1], ['1f1b', 4, 8, 1], ['interleaved', 2, 4, 2], ['interleaved', 4, 8, 2], ['interleaved', 2, 6, 3]] as const) {
    const s = { kind, p, m, v };
    const theory = theoreticalBubble(s);
    assert.ok(Math.abs(theory - (p - 1) / (v * m + p - 1)) < 1e-12);
    for (const b of simulate(s).bubble) assert.ok(Math.abs(b - theory) < 1e-9, `${kind} p=${p} m=${m} v=${v}: simulated ${b} vs ${theory}`);
  }
  const g = simulate({ kind: 'gpipe', p: 4, m: 8, v: 1 }), f = simulate({ kind: '1f1b', p: 4, m: 8, v: 1 });
  assert.deepEqual(g.peakInFlight, [8, 8, 8, 8]);
  assert.deepEqual(f.peakInFlight, [4, 3, 2, 1]);
});

test('schedule invariants name the config field', () => {
  assert.match(scheduleShapeError({ kind: '1f1b', p: 4, m: 2, v: 1 })!, /train\.gradAccum \(micro-batches per step, 2\) must be at least parallel\.pp \(4\)/);
  assert.match(scheduleShapeError({ kind: 'interleaved', p: 2, m: 3, v: 2 })!, /train\.gradAccum \(3\) must be a multiple of parallel\.pp/);
  assert.match(scheduleShapeError({ kind: 'interleaved', p: 2, m: 2, v: 1 })!, /parallel\.pipelineChunks must be at least 2/);
  assert.match(scheduleShapeError({ kind: 'zigzag' as never, p: 2, m: 2, v: 1 })!, /parallel\.pipelineSchedule must be one of gpipe, 1f1b, interleaved/);
  assert.equal(scheduleShapeError({ kind: 'gpipe', p: 4, m: 1, v: 1 }), null);
});

test('partition: contiguous, at least one layer per stage, minimal bottleneck; the head-heavy last stage gets fewer layers', () => {
  const c = { layers: [1, 1, 1, 1, 1, 1, 1, 1], first: 0, last: 2 };
  const parts = partitionLayers(c, 4);
  assert.equal(parts[0]![0], 0);
  assert.equal(parts[3]![1], 8);
  for (let i = 1; i < parts.length; i++) assert.equal(parts[i]![0], parts[i - 1]![1]);
  for (const [lo, hi] of parts) assert.ok(hi > lo);
  assert.equal(Math.max(...stageCosts(c, parts)), 3);
  assert.equal(parts[3]![1] - parts[3]![0], 1);
  // Brute force over all 2-stage cuts.
  const c2 = { layers: [5, 1, 1, 1, 4, 2], first: 1, last: 3 };
  const best = Math.min(...[1, 2, 3, 4, 5].map((k) => Math.max(...stageCosts(c2, [[0, k], [k, 6]]))));
  assert.equal(Math.max(...stageCosts(c2, partitionLayers(c2, 2))), best);
  assert.throws(() => partitionLayers(c, 9), /8 layers cannot fill 9 stages/);
  assert.throws(() => gptStagePartition({ ...cfg(), nLayer: 3 }, 2, 2), /model\.nLayer \(3\) must be at least parallel\.pp × chunks = 2 × 2 = 4/);
});

function cfg(extra: Partial<GptConfig> = {}): GptConfig {
  return { nLayer: 4, nHead: 2, dModel: 16, dFF: 32, vocabSize: 50, seqLen: 8, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5, ...extra };
}

function tokens(n: number, V: number, seed: number): Int32Array {
  const r = new Rng(seed);
  return Int32Array.from({ length: n }, () => r.int(V));
}

/** Every rank's stages for a layout, in rank order. */
function allRanks(c: GptConfig, p: number, v: number): GptPipelineStages[] {
  return Array.from({ length: p }, (_, rank) => new GptPipelineStages(c, { p, v, rank }, { seed: 7, recompute: false }));
}

for (const [name, extra, p, v] of [
  ['pp=2', {}, 2, 1], ['pp=4', {}, 4, 1], ['pp=2 × 2 chunks', {}, 2, 2], ['tied, pp=2', { tieEmbeddings: true }, 2, 1],
  ['rotary, tied, pp=2 × 2 chunks', { positions: 'rotary', tieEmbeddings: true }, 2, 2],
] as const) {
  test(`GPT stage plan (${name}): each rank holds only its stages, with the single-process initial values; chained stages give GPT's loss and gradients`, () => {
    const c = cfg(extra as Partial<GptConfig>);
    const full1 = new GPT(c, { seed: 7 });
    const ref = new Map(full1.namedParameters());
    const ranks = allRanks(c, p, v);
    const seen = new Map<string, number>();
    for (const st of ranks) {
      for (const [n, t] of st.namedParameters()) {
        const r = ref.get(n);
        assert.ok(r, `${name}: unexpected parameter ${n}`);
        assert.deepEqual([...t.data], [...r.data], `${name}: ${n} differs from the single-process init`);
        if (!(st.tiedCopy && n === 'wte.weight')) seen.set(n, (seen.get(n) ?? 0) + 1);
      }
      // Dropout draws from the same generator state as the whole model's.
      assert.deepEqual(st.rng.getState(), full1.rng.getState());
      assert.ok(st.numParameters() < full1.numParameters(), `${name}: a rank holds only part of the model`);
    }
    assert.deepEqual([...seen.keys()].sort(), [...ref.keys()].sort(), `${name}: parameters not held exactly once`);
    for (const k of seen.values()) assert.equal(k, 1);

    const B = 2, T = c.seqLen;
    const x = tokens(B * T, c.vocabSize, 1), y = tokens(B * T, c.vocabSize, 2);
    const refLoss = scope(() => {
      const l = full1.loss(fromStorage(x, [B, T], 'int32'), fromStorage(y, [B, T], 'int32'));
      backward(l);
      return l.item();
    });
    // Run virtual stages 0..p·v-1 in order, each on its rank, handing activations on as fresh leaves.
    const S = p * v;
    const outs: { out: Tensor; inp: Tensor }[] = [];
    let act: Tensor = fromStorage(x, [B, T], 'int32');
    let loss = 0;
    for (let s = 0; s < S; s++) {
      const st = ranks[s % p]!, ch = Math.floor(s / p);
      const out = st.forwardChunk(ch, act, st.chunks[ch]!.last ? fromStorage(y, [B, T], 'int32') : undefined);
      outs.push({ out, inp: act });
      if (s === S - 1) loss = out.item();
      else {
        act = fromStorage(Float32Array.from(out.data as Float32Array), out.shape, 'float32');
        act.requiresGrad = true;
      }
    }
    assert.ok(Math.abs(loss - refLoss) <= 1e-6 * Math.abs(refLoss), `${name}: loss ${loss} vs ${refLoss}`);
    let g: Tensor = full([], 1);
    for (let s = S - 1; s >= 0; s--) {
      backward(outs[s]!.out, { grad: g });
      if (s > 0) g = fromStorage(Float32Array.from(outs[s]!.inp.grad!.data as Float32Array), outs[s]!.inp.shape, 'float32');
    }
    // The tied weight's two copies each hold part of the gradient; their sum is the reference.
    const grads = new Map<string, Float32Array>();
    for (const st of ranks) {
      for (const [n, t] of st.namedParameters()) {
        const gd = Float32Array.from(t.grad!.data as Float32Array);
        const prev = grads.get(n);
        if (prev) for (let i = 0; i < gd.length; i++) prev[i]! += gd[i]!;
        else grads.set(n, gd);
      }
    }
    for (const [n, r] of ref) {
      const a = grads.get(n)!, b = r.grad!.data as Float32Array;
      let err = 0, mag = 0;
      for (let i = 0; i < b.length; i++) { err = Math.max(err, Math.abs(a[i]! - b[i]!)); mag = Math.max(mag, Math.abs(b[i]!)); }
      assert.ok(err <= 1e-5 * mag + 1e-9, `${name}: gradient of ${n} differs by ${err} (max |g| ${mag})`);
    }
  });
}
