// The embedding store's native batch kernels (native/sparse.c: id find, per-id
// bookkeeping, gather, gradient sums, optimizers) against its TypeScript loops, which
// are their reference: the same workload on two tables, one forced to the TypeScript
// path, must leave bit-identical answers, rows, optimizer state, LRU order and counters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseServerConfig } from '../src/recsys/embedding-config.js';
import { GroupTable } from '../src/recsys/embedding-store.js';
import { idsToPairs, shardOf } from '../src/recsys/embedding-hash.js';
import { nativeSparse, storeArray } from '../src/recsys/native-sparse.js';

const G = 5;
const noNative = nativeSparse() === null;

function table(over: Record<string, unknown>, native: boolean): GroupTable {
  const cfg = parseServerConfig({ seed: 11, groups: [{ id: G, dim: 8, ...over }] }, 'test');
  return new GroupTable(cfg.groups[0]!, cfg.seed, { native });
}

/** Deterministic skewed ids (a few hot, many cold) so batches mix hits, misses and duplicates. */
function batchOf(rng: () => number, n: number, universe: number): number[] {
  return Array.from({ length: n }, () => Math.floor(universe * Math.pow(rng(), 3)));
}
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; return x / 4294967296; };
}

function assertSame(a: GroupTable, b: GroupTable, where: string): void {
  assert.deepEqual(a.counters, b.counters, `${where}: counters`);
  assert.deepEqual(a.lruOrder(), b.lruOrder(), `${where}: LRU order`);
  const ea = a.exportRows(), eb = b.exportRows();
  assert.equal(ea.count, eb.count, `${where}: count`);
  assert.deepEqual(new Uint32Array(ea.rows.buffer), new Uint32Array(eb.rows.buffer), `${where}: rows (bits)`);
  assert.deepEqual(new Uint32Array(ea.state.buffer), new Uint32Array(eb.state.buffer), `${where}: state (bits)`);
  assert.deepEqual(ea.rowStep, eb.rowStep, `${where}: row steps`);
  assert.deepEqual(ea.lastTouch, eb.lastTouch, `${where}: last touch`);
}

const optimizers = [
  { kind: 'sgd', lr: 0.1 },
  { kind: 'adagrad', lr: 0.05, eps: 1e-8, initialAccumulator: 0.1 },
  { kind: 'adam', lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
];
const policies = [
  { capacity: 5000, admitProbability: 1, expireSteps: 0 },      // no eviction: all hits after warm-up
  { capacity: 150, admitProbability: 1, expireSteps: 0 },       // constant eviction, batches near capacity
  { capacity: 400, admitProbability: 0.4, expireSteps: 6 },     // admission refusals and expiry
];

for (const optimizer of optimizers) {
  for (const [pi, policy] of policies.entries()) {
    test(`native batch kernels equal the TypeScript loops: ${optimizer.kind}, policy ${pi}`, { skip: noNative && 'native library unavailable' }, () => {
      const nat = table({ optimizer, ...policy }, true), ref = table({ optimizer, ...policy }, false);
      const rng = lcg(17 + pi);
      for (let step = 1; step <= 40; step++) {
        const n = 1 + Math.floor(rng() * 140);
        const ids = idsToPairs(G, batchOf(rng, n, 1200));
        const readOnly = step % 7 === 0;
        const oa = new Float32Array(n * 8), ob = new Float32Array(n * 8);
        nat.lookup(ids, n, oa, step, readOnly);
        ref.lookup(ids, n, ob, step, readOnly);
        assert.deepEqual(new Uint32Array(oa.buffer), new Uint32Array(ob.buffer), `step ${step}: lookup answers`);
        if (!readOnly) {
          const grads = Float32Array.from({ length: n * 8 }, () => rng() - 0.5);
          // Push a shuffled sub-batch plus a few ids the lookup did not see.
          const pn = n + 3;
          const pid = idsToPairs(G, [...batchOf(rng, n, 1200), 1300 + step, 1301 + step, 1302 + step].slice(0, pn));
          const pg = Float32Array.from({ length: pn * 8 }, (_, k) => grads[k % grads.length]!);
          assert.deepEqual(nat.push(pid, pn, pg, step), ref.push(pid, pn, pg, step), `step ${step}: push result`);
        }
        const wn = Math.min(n, 30);
        const wa = new Uint8Array(wn * 16), wb = new Uint8Array(wn * 16);
        nat.lookupWire(ids, wn, 'bfloat16', wa, step, false);
        ref.lookupWire(ids, wn, 'bfloat16', wb, step, false);
        assert.deepEqual(wa, wb, `step ${step}: bfloat16 wire answers`);
        assert.equal(nat.sweepExpired(step), ref.sweepExpired(step), `step ${step}: expired`);
        assertSame(nat, ref, `step ${step}`);
      }
      assert.ok(nat.counters.hits > 0 && nat.counters.inserts > 0, 'the workload exercised hits and inserts');
      if (pi === 1) assert.ok(nat.counters.evictions > 0, 'the workload evicted');
      if (pi === 2) assert.ok(nat.counters.notAdmitted > 0 && nat.counters.expired > 0, 'the workload refused and expired');
    });
  }
}

test('native batch path still refuses an id of another shard or group', { skip: noNative && 'native library unavailable' }, () => {
  for (const native of [true, false]) {
    const t = table({}, native);
    t.numShards = 4;
    t.shardIndex = 1;
    const ids = idsToPairs(G, Array.from({ length: 64 }, (_, i) => i));
    assert.throws(() => t.lookup(ids, 64, new Float32Array(64 * 8), 1, false), /does not belong to shard 1 of 4/);
    assert.throws(() => t.push(ids, 64, new Float32Array(64 * 8), 2), /does not belong to shard 1 of 4/);
    const other = idsToPairs(G + 1, [1]);
    const t1 = table({}, native);
    t1.lookup(idsToPairs(G, [1, 2]), 2, new Float32Array(16), 1, false);
    assert.throws(() => t1.lookup(other, 1, new Float32Array(8), 2, false), /or to this group/);
  }
});

test('native shard check agrees with shardOf for power-of-two and other shard counts', { skip: noNative && 'native library unavailable' }, () => {
  for (const numShards of [1, 2, 3, 4, 6]) {
    const all = idsToPairs(G, Array.from({ length: 400 }, (_, i) => i * 13 + 1));
    const mine: number[] = [];
    for (let i = 0; i < 400; i++) if (shardOf(all[2 * i + 1]!, all[2 * i]!, numShards) === numShards - 1) mine.push(i * 13 + 1);
    const [nat, ref] = [true, false].map((native) => { const t = table({}, native); t.numShards = numShards; t.shardIndex = numShards - 1; return t; });
    const ids = idsToPairs(G, mine), n = mine.length;
    const oa = new Float32Array(n * 8), ob = new Float32Array(n * 8);
    nat!.lookup(ids, n, oa, 1, false);
    ref!.lookup(ids, n, ob, 1, false);
    assert.deepEqual(oa, ob, `${numShards} shards: answers`);
    assert.equal(nat!.count, n, `${numShards} shards: every id of the shard stored`);
    nat!.push(ids, n, oa, 1); // hits through the push kernel's check
    if (numShards > 1) {
      const foreign = Array.from({ length: 400 }, (_, i) => i * 13 + 1).find((x) => !mine.includes(x))!;
      assert.throws(() => nat!.lookup(idsToPairs(G, [mine[0]!, foreign]), 2, new Float32Array(16), 2, false), new RegExp(`does not belong to shard ${numShards - 1} of ${numShards}`));
    }
  }
});

// athn_sparse_lookup_fill creates rows in C (seeded init, initial optimizer state, index,
// LRU head) for first-seen ids: batches of mostly new ids, crossing slab and rehash
// boundaries (where it hands back to TypeScript), must equal the TypeScript loops bit for bit.
for (const [name, over] of [
  ['uniform init, dim 64, adagrad', { dim: 64, init: { kind: 'uniform', scale: 0.37 }, optimizer: { kind: 'adagrad', lr: 0.05, eps: 1e-8, initialAccumulator: 0.3 } }],
  ['zeros init, dim 5, adam', { dim: 5, init: { kind: 'zeros' }, optimizer: { kind: 'adam', lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 } }],
  ['uniform init, dim 3, sgd', { dim: 3, init: { kind: 'uniform', scale: 1 }, optimizer: { kind: 'sgd', lr: 0.1 } }],
] as const) {
  test(`native lookups create new rows exactly as the TypeScript loops: ${name}`, { skip: noNative && 'native library unavailable' }, () => {
    const mk = (native: boolean): GroupTable => {
      const cfg = parseServerConfig({ seed: 23, groups: [{ id: G, capacity: 40_000, ...over }] }, 'test');
      return new GroupTable(cfg.groups[0]!, cfg.seed, { native });
    };
    const nat = mk(true), ref = mk(false), dim = over.dim;
    const rng = lcg(99);
    let next = 0;
    for (let step = 1; step <= 12; step++) {
      // ~3000 ids a batch, most never seen, some repeated within and across batches.
      const n = 2500 + Math.floor(rng() * 1000);
      const raw = Array.from({ length: n }, () => (rng() < 0.8 ? next++ : Math.floor(rng() * Math.max(1, next))));
      const ids = idsToPairs(G, raw);
      const readOnly = step % 5 === 0;
      const oa = new Float32Array(n * dim), ob = new Float32Array(n * dim);
      nat.lookup(ids, n, oa, step, readOnly);
      ref.lookup(ids, n, ob, step, readOnly);
      assert.deepEqual(new Uint32Array(oa.buffer), new Uint32Array(ob.buffer), `step ${step}: answers`);
      const g = Float32Array.from({ length: n * dim }, () => rng() - 0.5);
      if (!readOnly) assert.deepEqual(nat.push(ids, n, g, step), ref.push(ids, n, g, step), `step ${step}: push`);
      assertSame(nat, ref, `step ${step}`);
    }
    // Slabs are 16384 rows: the run crossed at least one slab and several index resizes.
    assert.ok(nat.counters.inserts > 20_000, `inserted ${nat.counters.inserts} rows`);
  });
}

test('store arrays: zeroed, of the asked length, and 2 MiB-aligned (huge pages) from 4 MiB on', () => {
  const nat = nativeSparse();
  for (const [ctor, n] of [[Float32Array, 1 << 20], [Int32Array, 3 << 20], [Float64Array, 1000], [Uint32Array, 5]] as const) {
    const a = storeArray(ctor as Float32ArrayConstructor, n);
    assert.equal(a.length, n);
    assert.ok(a.every((x) => x === 0), 'zeroed');
    a[n - 1] = 7; // the whole range is usable
    assert.equal(a[n - 1], 7);
    if (nat && a.byteLength >= 4 << 20) assert.equal(nat.hugeSkip(a), 0, `${ctor.name}(${n}) starts on a 2 MiB boundary`);
  }
});

// GroupTable.pushBf16: SGD and Adagrad read bfloat16 gradients in place (athn_sparse_*_bf16)
// when no id repeats, and decode them otherwise; either way it must equal decoding to float32
// and pushing through the TypeScript loops, bit for bit (bfloat16 widens exactly).
for (const optimizer of optimizers) {
  test(`bfloat16 pushes equal decoded float32 pushes: ${optimizer.kind}`, { skip: noNative && 'native library unavailable' }, () => {
    const policy = { capacity: 600, admitProbability: 1, expireSteps: 0 };
    const nat = table({ optimizer, ...policy }, true), ref = table({ optimizer, ...policy }, false);
    const rng = lcg(41);
    for (let step = 1; step <= 30; step++) {
      const n = 1 + Math.floor(rng() * 200);
      // Odd steps: distinct ids (the in-place path); even steps: repeats (decoded and summed).
      const raw = step % 2 ? [...new Set(batchOf(rng, n, 900))] : batchOf(rng, n, 900);
      const ids = idsToPairs(G, raw), m = raw.length;
      const g16 = Uint16Array.from({ length: m * 8 }, () => (rng() < 0.5 ? 0x3c00 : 0xbc00) | Math.floor(rng() * 0x3ff));
      const g32 = new Float32Array(m * 8);
      new Uint32Array(g32.buffer).set(Array.from(g16, (h) => h << 16));
      nat.lookup(ids, m, new Float32Array(m * 8), step, false);
      ref.lookup(ids, m, new Float32Array(m * 8), step, false);
      assert.deepEqual(nat.pushBf16(ids, m, g16, step), ref.push(ids, m, g32, step), `step ${step}: push result`);
      assertSame(nat, ref, `step ${step}`);
    }
  });
}

// A trainer pushes the ids it looked up, in the same order, a few batches later: the native
// push then takes the lookup's slots (GroupTable.recall) instead of probing the index. With
// evictions, refused ids, expiry and other batches in between, the slots may be stale; the
// result must still equal the TypeScript loops bit for bit.
for (const [pi, policy] of [
  { capacity: 5000, admitProbability: 1, expireSteps: 0 },
  { capacity: 260, admitProbability: 1, expireSteps: 0 },
  { capacity: 500, admitProbability: 0.6, expireSteps: 2 },
].entries()) {
  test(`pushes of looked-up batches (slots recalled) equal the TypeScript loops: policy ${pi}`, { skip: noNative && 'native library unavailable' }, () => {
    const optimizer = { kind: 'adagrad', lr: 0.05, eps: 1e-8, initialAccumulator: 0.1 };
    const nat = table({ optimizer, ...policy }, true), ref = table({ optimizer, ...policy }, false);
    let recalled = 0;
    const t = nat as unknown as { recall: (ids: Uint32Array, n: number) => number | null };
    const recall = t.recall.bind(nat);
    t.recall = (ids, n) => { const r = recall(ids, n); if (r !== null) recalled++; return r; };
    const rng = lcg(7 + pi);
    const inFlight: Uint32Array[] = [];
    for (let step = 1; step <= 60; step++) {
      const n = 20 + Math.floor(rng() * 200);
      const ids = idsToPairs(G, batchOf(rng, n, 1500));
      nat.lookup(ids, n, new Float32Array(n * 8), step, false);
      ref.lookup(ids, n, new Float32Array(n * 8), step, false);
      inFlight.push(ids);
      // Staleness 2 (5 with expiry, so that rows of a batch in flight expire and their slots
      // are freed or reused before its push): the oldest batch is pushed now, sometimes two.
      const k = pi === 2 ? 5 : 2;
      while (inFlight.length > k || (inFlight.length > 0 && rng() < 0.2)) {
        const p = inFlight.shift()!, pn = p.length / 2;
        const g = Float32Array.from({ length: pn * 8 }, () => rng() - 0.5);
        assert.deepEqual(nat.push(p, pn, g, step), ref.push(p, pn, g, step), `step ${step}: push result`);
      }
      assert.equal(nat.sweepExpired(step), ref.sweepExpired(step), `step ${step}: expired`);
      assertSame(nat, ref, `step ${step}`);
    }
    assert.ok(recalled > 30, `pushes took the lookups' slots (${recalled} times)`);
    if (pi === 1) assert.ok(nat.counters.evictions > 0, 'the workload evicted');
    if (pi === 2) assert.ok(nat.counters.notAdmitted > 0 && nat.counters.expired > 0, 'the workload refused and expired');
  });
}
