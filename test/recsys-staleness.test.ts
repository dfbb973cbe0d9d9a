// Staleness is exactly k: the hybrid trainer with k = 1 and k = 2 equals, bit for bit
// (losses, dense parameters, every embedding row), a plain sequential loop that issues
// lookup j right after push j − k − 1 has been applied; and k > 0 really differs from
// k = 0 (a trainer that ignored `staleness` would fail here, not only the AUC test).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';
import { fromStorage } from '../src/core/tensor.js';
import { AdamW } from '../src/optim/index.js';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
import type { EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import type { EmbeddingClient } from '../src/recsys/embedding-client.js';
import { generateCriteo } from '../src/recsys/criteo-generate.js';
import { readCriteoFile, type CriteoFormat, type RecBatch } from '../src/recsys/criteo.js';
import { DLRM, bceWithLogits, rowsLeaf, type DlrmConfig } from '../src/recsys/dlrm.js';
import { HybridTrainer, arraySource } from '../src/recsys/hybrid-trainer.js';

const F = 4, J = 4, D = 8, B = 64, STEPS = 24;
const FMT: CriteoFormat = { numDense: J, numSparse: F };
const MODEL: DlrmConfig = { numDense: J, numSparse: F, embDim: D, bottom: [16], top: [16], seed: 1 };
const SERVERS: EmbeddingServerConfigInput = {
  seed: 1, groups: Array.from({ length: F }, (_, f) => ({ id: f, dim: D })),
  optimizer: { kind: 'adagrad', lr: 0.05, eps: 1e-10, initialAccumulator: 0 }, init: { kind: 'uniform', scale: 0.3 },
};

interface Outcome { losses: number[]; params: Float32Array[]; rows: Float32Array[] }

/** Every id of every batch, read back without touching the servers' state. */
async function allRows(client: EmbeddingClient, batches: RecBatch[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let f = 0; f < F; f++) {
    const ids = [...new Set(batches.flatMap((b) => [...b.sparse[f]!]))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    out.push(await client.lookup(f, BigUint64Array.from(ids), { readOnly: true }));
  }
  return out;
}

/** The definition of staleness k, one thing at a time: lookup j is sent after push j-k-1 is acknowledged. */
async function reference(batches: RecBatch[], k: number): Promise<Outcome> {
  const cl = await launchEmbeddingServers({ numShards: 2, config: SERVERS });
  const client = await cl.connect({ wireDtype: 'float32' });
  try {
    const model = new DLRM(MODEL);
    const opt = new AdamW(model.parameters(), { lr: 0.003, weightDecay: 0 });
    const batch = (j: number): RecBatch => batches[j % batches.length]!;
    const lookup = (j: number): Promise<Float32Array[]> => Promise.all(batch(j).sparse.map((ids, f) => client.lookup(f, ids)));
    const rows = new Map<number, Float32Array[]>();
    for (let j = 0; j <= k && j < STEPS; j++) rows.set(j, await lookup(j)); // before any push
    const losses: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const b = batch(s);
      opt.zeroGrad();
      const { loss, grads } = scope(() => {
        const leaves = rows.get(s)!.map((r) => rowsLeaf(r, B, D));
        const l = bceWithLogits(model.forward(fromStorage(b.dense, [B, J], 'float32'), leaves), b.labels);
        const v = l.item();
        backward(l);
        return { loss: v, grads: leaves.map((x) => Float32Array.from(x.grad!.data as Float32Array)) };
      });
      rows.delete(s);
      for (let f = 0; f < F; f++) await client.pushGrads(f, b.sparse[f]!, grads[f]!, { advanceStep: f === F - 1 });
      opt.step();
      losses.push(loss);
      if (s + k + 1 < STEPS) rows.set(s + k + 1, await lookup(s + k + 1)); // right after push s = (s+k+1) - k - 1
    }
    return { losses, params: model.parameters().map((p) => Float32Array.from(p.data as Float32Array)), rows: await allRows(client, batches) };
  } finally { client.close(); await cl.stop(); }
}

async function trainer(batches: RecBatch[], k: number): Promise<Outcome> {
  const cl = await launchEmbeddingServers({ numShards: 2, config: SERVERS });
  const client = await cl.connect({ wireDtype: 'float32' });
  try {
    const model = new DLRM(MODEL);
    const t = new HybridTrainer({ model, client, staleness: k, dense: { kind: 'adamw', lr: 0.003 } });
    const r = await t.train(arraySource(batches), STEPS, B);
    const losses = Array.from({ length: STEPS }, (_, s) => r.losses.get(s)!);
    return { losses, params: model.parameters().map((p) => Float32Array.from(p.data as Float32Array)), rows: await allRows(client, batches) };
  } finally { client.close(); await cl.stop(); }
}

test('hybrid trainer with staleness k = 1 and k = 2 equals the lookup-after-push-(j-k-1) reference bit for bit; k > 0 differs from k = 0', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hybrid-stale-'));
  try {
    // 12 batches over a small vocabulary, so ids recur within k steps and staleness shows.
    generateCriteo(join(dir, 'train.tsv'), { rows: B * 12, seed: 5, numSparse: F, numDense: J, vocab: 40, zipfS: 1.05, pairFields: 0 });
    const batches = await readCriteoFile(join(dir, 'train.tsv'), { batchSize: B, format: FMT });
    const k0 = await reference(batches, 0);
    const outcomes: Outcome[] = [];
    for (const k of [1, 2]) {
      const ref = await reference(batches, k);
      const got = await trainer(batches, k);
      assert.deepEqual(got.losses, ref.losses, `k = ${k}: losses`);
      got.params.forEach((p, i) => assert.deepEqual(p, ref.params[i], `k = ${k}: dense parameter ${i}`));
      got.rows.forEach((r, f) => assert.deepEqual(r, ref.rows[f], `k = ${k}: embedding rows of field ${f}`));
      // Staleness must matter: step 0 reads fresh rows either way; step 1 reads rows
      // without push 0 when k > 0 (batches share ids), so it differs from k = 0 there.
      assert.notDeepEqual(ref.losses, k0.losses, `k = ${k} gave the same losses as k = 0`);
      const firstDiff = ref.losses.findIndex((l, s) => l !== k0.losses[s]);
      assert.equal(firstDiff, 1, `k = ${k}: losses should first differ from k = 0 at step 1, not ${firstDiff}`);
      outcomes.push(ref);
    }
    // k = 2 differs from k = 1 from step 2 on (step 2 misses push 0 with k = 2, not with k = 1).
    const [k1, k2] = outcomes as [Outcome, Outcome];
    assert.equal(k2.losses.findIndex((l, s) => l !== k1.losses[s]), 2, 'k = 2 vs k = 1: first differing step');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
