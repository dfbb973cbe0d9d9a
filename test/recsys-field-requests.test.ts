// The trainer's all-fields path (routeFields / lookupFields / pushFields) against the
// per-field client calls on real server processes: the same ids per server and field in
// the same order, the same rows, and after the same pushes the same server state
// (bit-identical rows, same server step), with duplicates within and across fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
import type { EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import { Rng } from '../src/core/rng.js';

const D = 4, GROUPS = [3, 0, 5];
const config: EmbeddingServerConfigInput = {
  seed: 7, groups: [...GROUPS.map((id) => ({ id, dim: D })), { id: 9, dim: 8 }],
  optimizer: { kind: 'adagrad', lr: 0.1, eps: 1e-10, initialAccumulator: 0 }, init: { kind: 'uniform', scale: 0.5 },
};

/** Field f's ids: Zipf-like small raw ids (many duplicates, the same raw ids in every field). */
function batch(rng: Rng, n: number): BigUint64Array[] {
  return GROUPS.map(() => BigUint64Array.from({ length: n }, () => BigInt(Math.floor(Math.pow(rng.uniform(), 3) * 40))));
}

for (const wireDtype of ['bfloat16', 'float32', 'float16'] as const) test(`routeFields / lookupFields / pushFields equal the per-field calls (ids per server, rows, server state; ${wireDtype} wire)`, async () => {
  const a = await launchEmbeddingServers({ numShards: 2, config });
  const b = await launchEmbeddingServers({ numShards: 2, config });
  const ca = await a.connect({ wireDtype }), cb = await b.connect({ wireDtype });
  try {
    const rng = new Rng(11), n = 50;
    for (let step = 0; step < 4; step++) {
      const ids = batch(rng, n);
      const rf = cb.routeFields(GROUPS, ids);
      assert.equal(rf.n, GROUPS.length * n);
      // Each field's block on each server: the per-field routing's ids, in its order.
      GROUPS.forEach((g, f) => {
        const rb = ca.route(g, ids[f]!);
        for (let s = 0; s < 2; s++) {
          const fs = rf.fieldStart[s]!;
          assert.deepEqual(Array.from(rf.shardIds[s]!.subarray(2 * fs[f]!, 2 * fs[f + 1]!)), Array.from(rb.routing.shardIds[s]!), `step ${step} field ${f} server ${s}`);
        }
      });
      const perField = await Promise.all(GROUPS.map((g, f) => ca.lookup(g, ids[f]!)));
      const all = await cb.lookupFields(rf, new Float32Array(rf.n * D));
      GROUPS.forEach((_, f) => assert.deepEqual(Array.from(all.subarray(f * n * D, (f + 1) * n * D)), Array.from(perField[f]!), `step ${step} field ${f} rows`));
      const grads = Float32Array.from({ length: rf.n * D }, () => rng.normal());
      const scale = step % 2 === 0 ? 1 : 0.37;
      await Promise.all(GROUPS.map((g, f) => ca.pushGrads(g, ids[f]!, grads.subarray(f * n * D, (f + 1) * n * D), { advanceStep: f === GROUPS.length - 1, scale })));
      const r = await cb.pushFields(rf, grads, { scale });
      assert.ok(r.applied > 0 && r.step === step + 1, `push reply ${JSON.stringify(r)}`);
    }
    // Same state everywhere: every id ever used, read-only, bit for bit; same server steps.
    const probe = GROUPS.map(() => BigUint64Array.from({ length: 40 }, (_, i) => BigInt(i)));
    for (const [f, g] of GROUPS.entries()) {
      const [x, y] = await Promise.all([ca.lookup(g, probe[f]!, { readOnly: true }), cb.lookup(g, probe[f]!, { readOnly: true })]);
      assert.deepEqual(Array.from(y), Array.from(x), `group ${g} after the pushes`);
    }
    const [sa, sb] = await Promise.all([ca.stats(), cb.stats()]);
    assert.deepEqual(sb.shards.map((s) => s.step), sa.shards.map((s) => s.step));
    assert.equal(sb.rows, sa.rows);
    // A batch where a server gets no ids at all still advances its step.
    const one = GROUPS.map(() => BigUint64Array.of(1n));
    const rf1 = cb.routeFields(GROUPS, one);
    assert.ok([0, 1].some((s) => rf1.shardCount(s) === 0) || rf1.shardCount(0) + rf1.shardCount(1) === 3);
    const before = (await cb.stats()).shards.map((s) => s.step);
    await cb.pushFields(rf1, new Float32Array(3 * D));
    assert.deepEqual((await cb.stats()).shards.map((s) => s.step), before.map((x) => x + 1));
    assert.throws(() => cb.routeFields([0, 9], [BigUint64Array.of(1n), BigUint64Array.of(1n)]), /one dim for all groups/);
    await assert.rejects(cb.lookupFields(rf1, new Float32Array(5)), /given an output of 5 floats/);
  } finally {
    ca.close(); cb.close();
    await Promise.all([a.stop(), b.stop()]);
  }
});
