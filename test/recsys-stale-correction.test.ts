// Staleness correction: a trainer replays its own in-flight gradients on the stale rows
// it looked up. With one trainer that is exactly what the servers will hold, so k = 4
// with the correction must follow k = 0's losses (up to float rounding of the replay),
// while k = 4 without it does not. Also: the LOOKUP state block on the wire.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
import type { EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import { generateCriteo } from '../src/recsys/criteo-generate.js';
import { readCriteoFile, type CriteoFormat, type RecBatch } from '../src/recsys/criteo.js';
import { DLRM, type DlrmConfig } from '../src/recsys/dlrm.js';
import { HybridTrainer, arraySource } from '../src/recsys/hybrid-trainer.js';
import { allocLookupResponse, decodeIdRequest, decodeLookupResponse, decodeValues, encodeIdRequest, encodeValues, HEADER_BYTES, LOOKUP_WITH_STATE, MsgType } from '../src/recsys/protocol.js';
import type { SparseOptimizerConfig } from '../src/recsys/sparse-optimizer.js';
import { PendingGradients } from '../src/recsys/stale-row-correction.js';

const F = 8, J = 4, D = 8;
const FMT: CriteoFormat = { numDense: J, numSparse: F };
const MODEL: DlrmConfig = { numDense: J, numSparse: F, embDim: D, bottom: [16], top: [16], seed: 1 };
const config = (optimizer: SparseOptimizerConfig): EmbeddingServerConfigInput => ({
  seed: 1, groups: Array.from({ length: F }, (_, f) => ({ id: f, dim: D })), optimizer, init: { kind: 'uniform', scale: 0.3 },
});

test('lookup response: the state block follows the rows 8-aligned (odd row bytes) and decodes', () => {
  for (const [dtype, n, dim, sw] of [['bfloat16', 3, 3, 3], ['float32', 5, 2, 0], ['float16', 1, 1, 2]] as const) {
    const rows = Float32Array.from({ length: n * dim }, (_, i) => i * 0.5 - 1);
    const r = allocLookupResponse(7, 2, dtype, n, dim, sw);
    encodeValues(dtype, rows, n * dim, r.values);
    if (sw > 0) r.state!.set(Float32Array.from({ length: n * sw }, (_, i) => i + 0.25));
    else assert.equal(r.state, null);
    const payload = new Uint8Array(r.frame.buffer, r.frame.byteOffset + HEADER_BYTES, r.frame.length - HEADER_BYTES);
    const d = decodeLookupResponse(Uint8Array.from(payload));
    assert.equal(d.stateWidth, sw);
    const back = new Float32Array(n * dim);
    decodeValues(d.dtype, d.values, n * dim, back);
    assert.deepEqual(back, rows);
    if (sw > 0) assert.deepEqual([...d.state!], Array.from({ length: n * sw }, (_, i) => i + 0.25));
    assert.throws(() => decodeLookupResponse(Uint8Array.from(payload).subarray(0, payload.length - (sw > 0 ? 2 : 4))), /does not fit/);
  }
});

test('lookup with state: the mask byte per id travels (padded) and is checked; state rows may be fewer than rows', () => {
  const ids = Uint32Array.from([1, 2, 3, 4, 5, 6]);
  const mask = Uint8Array.from([1, 0, 1]);
  const f = encodeIdRequest(MsgType.LOOKUP, 9, 4, 'bfloat16', LOOKUP_WITH_STATE, ids, 0, 3, undefined, mask);
  const payload = Uint8Array.from(f.subarray(HEADER_BYTES));
  const r = decodeIdRequest(payload, () => 0, false);
  assert.equal(r.count, 3);
  assert.deepEqual([...r.values.subarray(0, 3)], [1, 0, 1]);
  assert.throws(() => decodeIdRequest(payload.subarray(0, payload.length - 8), () => 0, false), /expected/);
  const resp = allocLookupResponse(9, 4, 'bfloat16', 3, 2, 2, 2);
  const d = decodeLookupResponse(Uint8Array.from(resp.frame.subarray(HEADER_BYTES)));
  assert.equal(d.state!.length, 4);
});

test('staleness correction refuses an optimizer it cannot replay, naming the field', () => {
  assert.throws(() => new PendingGradients(4, 'float32', [{ kind: 'sgd', lr: 1 }, { kind: 'adam', lr: 1, beta1: 0.9, beta2: 0.99, eps: 1e-8 }]), /field 1 uses the 'adam'.*stalenessCorrection/);
});

async function batches(dir: string, B: number): Promise<RecBatch[]> {
  generateCriteo(join(dir, 'train.tsv'), { rows: B * 12, seed: 3, numSparse: F, numDense: J, vocab: 60, zipfS: 1.05, pairFields: 0 });
  return readCriteoFile(join(dir, 'train.tsv'), { batchSize: B, format: FMT });
}

for (const optimizer of [
  { kind: 'adagrad', lr: 0.05, eps: 1e-10, initialAccumulator: 0 },
  { kind: 'sgd', lr: 0.5 },
] as SparseOptimizerConfig[]) {
  test(`one trainer, ${optimizer.kind}: k = 4 with the correction follows k = 0; without it, it does not`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stale-corr-'));
    const B = 32, steps = 30;
    try {
      const train = await batches(dir, B);
      const run = async (k: number, corr: boolean): Promise<{ losses: number[]; corrected: number; params: Float32Array[] }> => {
        const cl = await launchEmbeddingServers({ numShards: 2, config: config(optimizer) });
        const client = await cl.connect({ wireDtype: 'float32' });
        try {
          const model = new DLRM(MODEL);
          const t = new HybridTrainer({ model, client, staleness: k, stalenessCorrection: corr, dense: { kind: 'adamw', lr: 0.003 } });
          const r = await t.train(arraySource(train), steps, B);
          return { losses: [...r.losses.values()], corrected: r.correctedRows, params: model.parameters().map((p) => Float32Array.from(p.data as Float32Array)) };
        } finally { client.close(); await cl.stop(); }
      };
      const k0 = await run(0, true); // k = 0: nothing in flight, the correction never runs
      const stale = await run(4, false);
      const fixed = await run(4, true);
      assert.equal(k0.corrected, 0);
      assert.ok(fixed.corrected > 0, 'the correction replayed rows');
      const maxDiff = (a: number[]): number => Math.max(...a.map((x, i) => Math.abs(x - k0.losses[i]!)));
      const dStale = maxDiff(stale.losses), dFixed = maxDiff(fixed.losses);
      // The replay runs the same rule in TS (double intermediates) that the server runs in C (float): 1e-4 absorbs that.
      assert.ok(dFixed < 1e-4, `${optimizer.kind}: corrected k=4 losses differ from k=0 by ${dFixed}`);
      assert.ok(dStale > 10 * dFixed && dStale > 1e-3, `${optimizer.kind}: uncorrected k=4 should drift from k=0 (max diff ${dStale} vs corrected ${dFixed})`);
      const pDiff = Math.max(...fixed.params.map((p, i) => Math.max(...p.map((x, j) => Math.abs(x - k0.params[i]![j]!)))));
      assert.ok(pDiff < 1e-3, `${optimizer.kind}: corrected k=4 dense parameters differ from k=0 by ${pDiff}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
