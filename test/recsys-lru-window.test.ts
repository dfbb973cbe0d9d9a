// The store's windowed LRU (lru-list.ts, GroupSlots in group-slots.ts): a touch moves
// a row to the head only when capacity/8 links happened since its own; rows touched in the
// running call are never its eviction victims; expiry runs on exact LRU; checkpoints list
// rows by last touch. Each case runs on the native kernels and on the TypeScript loops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseServerConfig } from '../src/recsys/embedding-config.js';
import { GroupTable } from '../src/recsys/embedding-store.js';
import { idsToPairs, pairToBigInt } from '../src/recsys/embedding-hash.js';
import { nativeSparse } from '../src/recsys/native-sparse.js';
import { EmbeddingShard } from '../src/recsys/embedding-shard.js';
import { dumpShard, loadShard } from '../src/recsys/embedding-checkpoint.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const G = 6, DIM = 4;
const paths = nativeSparse() ? [true, false] : [false];
function table(native: boolean, over: Record<string, unknown> = {}): GroupTable {
  const cfg = parseServerConfig({ seed: 3, groups: [{ id: G, dim: DIM, optimizer: { kind: 'sgd', lr: 1 }, ...over }] }, 'test');
  return new GroupTable(cfg.groups[0]!, cfg.seed, { native });
}
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
const order = (t: GroupTable): number[] => t.lruOrder().map(([hi, lo]) => Number(pairToBigInt(hi & 0xffffff, lo)));
function look(t: GroupTable, ids: number[], step: number): Float32Array {
  const out = new Float32Array(ids.length * DIM);
  t.lookup(idsToPairs(G, ids), ids.length, out, step, false);
  return out;
}

for (const native of paths) {
  const path = native ? 'native' : 'TypeScript';

  test(`${path}: a touch relinks only rows not among the capacity/8 most recently linked`, () => {
    const t = table(native, { capacity: 64 }); // window 8
    look(t, range(0, 64), 1);
    assert.deepEqual(order(t), range(0, 64));
    look(t, [60], 2); // linked 4 links ago: keeps its place
    assert.deepEqual(order(t), range(0, 64));
    look(t, [10], 3); // 54 links ago: to the head
    assert.deepEqual(order(t), [...range(0, 10), ...range(11, 64), 10]);
    look(t, [56], 4); // 8 links ago (the move of 10 was one): moves
    assert.deepEqual(order(t), [...range(0, 10), ...range(11, 56), ...range(57, 64), 10, 56]);
    // The last touch is exact whatever the list did.
    const e = t.exportRows();
    assert.equal(e.lastTouch[e.count - 6], 2, 'row 60, touched at step 2, sits where it was linked (before 61..63, touched at 1)');
    assert.deepEqual(Array.from({ length: e.count }, (_, i) => e.ids[2 * i]!), order(t), 'a dump lists rows in list order');
  });

  test(`${path}: a row touched earlier in the same call is never evicted by it`, () => {
    const t = table(native, { capacity: 64 });
    look(t, range(0, 64), 1);
    // Give row 60 a value that differs from its init vector.
    t.push(idsToPairs(G, [60]), 1, new Float32Array(DIM).fill(0.25), 1);
    const before = look(t, [60], 1); // near the head: not relinked
    // 61 new ids evict the 60 rows behind 60, then would take 60 itself: it is touched in
    // this call, so it moves to the head and 61 goes instead.
    const ids = [60, ...range(100, 161)];
    const got = look(t, ids, 2);
    assert.deepEqual(got.subarray(0, DIM), before, 'row 60 answered with its stored value');
    assert.equal(t.counters.evictions, 61);
    const resident = new Set(order(t));
    assert.ok(resident.has(60) && !resident.has(61) && resident.has(62), 'row 60 kept, 61 evicted');
    for (const id of ids) assert.ok(resident.has(id), `id ${id} of the call resident`);
    // A push of the same rows applies every gradient (none evicted by its own call).
    const r = t.push(idsToPairs(G, ids), ids.length, new Float32Array(ids.length * DIM).fill(0.5), 2);
    assert.deepEqual([r.applied, r.dropped], [ids.length, 0]);
  });

  test(`${path}: a row touched after the tail was linked is not the victim`, () => {
    const t = table(native, { capacity: 64 });
    look(t, range(0, 64), 1);
    // 0 (the tail) is hot; no inserts happen meanwhile. The tail was linked 64 links ago, more
    // than the window, so its first touch moves it, and 1 is the next victim.
    for (let step = 2; step < 10; step++) look(t, [0], step);
    assert.equal(order(t).at(-1), 0, 'hot row 0 at the head');
    look(t, [1000], 10);
    assert.deepEqual(order(t).slice(-2), [0, 1000]);
    assert.ok(!order(t).includes(1), 'row 1 evicted');
  });

  test(`${path}: expiry switches to exact LRU (list re-sorted by last touch)`, () => {
    const t = table(native, { capacity: 64 });
    look(t, range(0, 64), 1);
    look(t, [60, 10], 2); // 60 keeps its place, 10 moves to the head
    look(t, [59], 3); // 6 links ago: keeps its place
    assert.deepEqual(order(t).slice(-6), [59, 60, 61, 62, 63, 10]);
    t.setPolicy({ expireSteps: 2 });
    assert.deepEqual(order(t).slice(-6), [61, 62, 63, 60, 10, 59], 'by last touch, ties in list order');
    look(t, [0], 3); // exact from now on: to the head
    assert.deepEqual(order(t).slice(-4), [60, 10, 59, 0]);
    assert.equal(t.sweepExpired(4), 60, 'rows last touched at step 1 expire at step 4');
    assert.deepEqual(order(t), [60, 10, 59, 0]);
  });
}

test('a dump/load round trip orders rows by last touch (the dump lists them in list order)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-lru-'));
  try {
    const cfg = parseServerConfig({ seed: 3, groups: [{ id: G, dim: DIM, capacity: 64, optimizer: { kind: 'sgd', lr: 1 } }] }, 'test');
    const a = new EmbeddingShard(cfg, 0, 1), b = new EmbeddingShard(cfg, 0, 1);
    a.lookup(G, idsToPairs(G, range(0, 64)), 64, false); // step 0
    a.advanceStep();
    a.lookup(G, idsToPairs(G, [60]), 1, false); // step 1, within the window: not moved
    a.advanceStep();
    a.lookup(G, idsToPairs(G, [10]), 1, false); // step 2: moved
    assert.deepEqual(order(a.table(G)).slice(-6), [59, 60, 61, 62, 63, 10]);
    await dumpShard(a, dir, 'lru');
    loadShard(b, dir);
    assert.deepEqual(order(b.table(G)).slice(-6), [59, 61, 62, 63, 60, 10]);
    const ea = a.table(G).exportRows(), eb = b.table(G).exportRows();
    assert.equal(eb.count, ea.count);
    for (let i = 1; i < eb.count; i++) assert.ok(eb.lastTouch[i - 1]! <= eb.lastTouch[i]!, 'loaded oldest first by last touch');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
