import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseServerConfig, type EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import { EmbeddingShard } from '../src/recsys/embedding-shard.js';
import { dumpShard, loadShard } from '../src/recsys/embedding-checkpoint.js';
import { idsToPairs, pairToBigInt, shardOf } from '../src/recsys/embedding-hash.js';
import type { SparseOptimizerConfig } from '../src/recsys/sparse-optimizer.js';

const G = 3;
function shardWith(over: Partial<EmbeddingServerConfigInput['groups'][number]> & { dim?: number }, top: Partial<EmbeddingServerConfigInput> = {}, idx = 0, n = 1): EmbeddingShard {
  const cfg = parseServerConfig({ seed: 7, ...top, groups: [{ id: G, dim: 4, ...over }] }, 'test');
  return new EmbeddingShard(cfg, idx, n);
}
const pairs = (ids: number[]): Uint32Array => idsToPairs(G, ids);
const look = (s: EmbeddingShard, ids: number[], readOnly = false): Float32Array => s.lookup(G, pairs(ids), ids.length, readOnly);
const lruRaw = (s: EmbeddingShard): number[] => s.table(G).lruOrder().map(([hi, lo]) => Number(pairToBigInt(hi & 0xffffff, lo)));

test('rows are initialised from (seed, id) only: same values whatever the order or the shard', () => {
  const a = shardWith({});
  const b = shardWith({});
  const ra = look(a, [1, 2, 3, 4]);
  const rb = look(b, [4, 3, 2, 1]);
  for (let i = 0; i < 4; i++) assert.deepEqual(ra.subarray(i * 4, i * 4 + 4), rb.subarray((3 - i) * 4, (3 - i) * 4 + 4));
  for (const v of ra) assert.ok(Math.abs(v) <= 0.01 && v !== 0);
  const other = shardWith({}, { seed: 8 });
  assert.notDeepEqual(look(other, [1, 2, 3, 4]), ra);
  // Same id in another group gets another row.
  const cfg = parseServerConfig({ seed: 7, groups: [{ id: G, dim: 4 }, { id: G + 1, dim: 4 }] }, 'test');
  const two = new EmbeddingShard(cfg, 0, 1);
  assert.notDeepEqual(two.lookup(G + 1, idsToPairs(G + 1, [1]), 1, false), ra.subarray(0, 4));
});

test('LRU eviction removes the least recently touched row', () => {
  const s = shardWith({ capacity: 3, optimizer: { kind: 'sgd', lr: 1 } });
  look(s, [10, 11, 12]);
  assert.deepEqual(lruRaw(s), [10, 11, 12]);
  look(s, [10]); // 11 is now the oldest
  assert.deepEqual(lruRaw(s), [11, 12, 10]);
  s.push(G, pairs([12]), 1, new Float32Array(4).fill(1), true); // pushes touch too
  assert.deepEqual(lruRaw(s), [11, 10, 12]);
  look(s, [13]);
  assert.deepEqual(lruRaw(s), [10, 12, 13]);
  assert.equal(s.table(G).count, 3);
  assert.equal(s.table(G).counters.evictions, 1);
  look(s, [14, 15]);
  assert.deepEqual(lruRaw(s), [13, 14, 15]);
  // An evicted row comes back with its init value: its update is gone.
  const fresh = shardWith({ capacity: 3 });
  assert.deepEqual(look(s, [12]), look(fresh, [12]));
  // Many inserts and evictions keep the index consistent.
  const big = shardWith({ capacity: 500 });
  for (let r = 0; r < 20; r++) look(big, Array.from({ length: 300 }, (_, i) => (r * 211 + i * 7) % 2000));
  const order = lruRaw(big);
  assert.equal(order.length, 500);
  assert.equal(new Set(order).size, 500);
  for (const id of order) assert.ok(big.table(G).find(idsToPairs(G, [id])[1]!, id) >= 0);
  assert.deepEqual(order.slice(-300), Array.from({ length: 300 }, (_, i) => (19 * 211 + i * 7) % 2000).filter((x, i, a) => a.lastIndexOf(x) === i));
});

test('admission: about p of new ids are stored, deterministically, and refused ids get their init vector', () => {
  const p = 0.3, n = 20000;
  const ids = Array.from({ length: n }, (_, i) => i * 7919 + 13);
  const a = shardWith({ admitProbability: p, capacity: n });
  const rows = look(a, ids);
  const stored = a.table(G).count;
  // Binomial(20000, 0.3): sd ~ 65, so +-400 is > 6 sd.
  assert.ok(Math.abs(stored - p * n) < 400, `stored ${stored} of ${n}`);
  const b = shardWith({ admitProbability: p, capacity: n });
  look(b, ids.slice().reverse());
  const admittedA = lruRaw(a).sort((x, y) => x - y);
  assert.deepEqual(lruRaw(b).sort((x, y) => x - y), admittedA, 'same ids admitted whatever the order');
  const all = shardWith({ capacity: n });
  assert.deepEqual(rows, look(all, ids), 'refused ids answer their init vector');
  // Read-only lookups never store anything.
  const ro = shardWith({});
  look(ro, ids.slice(0, 100), true);
  assert.equal(ro.table(G).count, 0);
  // Gradients of refused ids are dropped.
  const z = shardWith({ admitProbability: 0 });
  const res = z.push(G, pairs([1, 2]), 2, new Float32Array(8).fill(1), true);
  assert.deepEqual([res.applied, res.dropped, z.table(G).count], [0, 2, 0]);
  // The draw is redone each step: a refused id gets in after a few steps.
  const c = shardWith({ admitProbability: p, capacity: n });
  const inA = new Set(admittedA);
  const refused = ids.filter((id) => !inA.has(id)).slice(0, 50);
  for (let step = 0; step < 40 && c.table(G).count < refused.length; step++) { look(c, refused); c.advanceStep(); }
  assert.equal(c.table(G).count, refused.length);
});

test('expiry drops rows untouched for more than expireSteps steps', () => {
  const s = shardWith({ expireSteps: 2 });
  const g = new Float32Array(4);
  look(s, [1, 2, 3]); // step 0
  s.push(G, pairs([]), 0, g, true); // -> step 1
  look(s, [2]); // touched at step 1
  s.push(G, pairs([]), 0, g, true); // step 2
  assert.equal(s.table(G).count, 3);
  s.push(G, pairs([3]), 1, g, true); // 3 touched at 2; step 3: 1 is 3 steps old
  assert.deepEqual(lruRaw(s).sort(), [2, 3]);
  s.push(G, pairs([]), 0, g, true); // step 4: 2 (touched at 1) is 3 steps old
  assert.deepEqual(lruRaw(s), [3]);
  assert.equal(s.table(G).counters.expired, 2);
  s.push(G, pairs([]), 0, g, true);
  s.push(G, pairs([]), 0, g, true);
  assert.equal(s.table(G).count, 0);
  look(s, [5, 6]); // freed slots are reused
  assert.equal(s.table(G).count, 2);
});

// ---- optimizers vs a dense reference ------------------------------------------

class DenseRef {
  w: Float32Array; a: Float32Array; b: Float32Array; t: Int32Array;
  constructor(readonly opt: SparseOptimizerConfig, readonly dim: number, init: Float32Array) {
    this.w = Float32Array.from(init);
    const n = init.length;
    this.a = new Float32Array(n).fill(opt.kind === 'adagrad' ? opt.initialAccumulator : 0);
    this.b = new Float32Array(n);
    this.t = new Int32Array(n / dim);
  }
  /** Dense gradient (rows x dim) accumulated from a batch; rows without gradient are left alone. */
  step(rowIdx: number[], grads: Float32Array): void {
    const d = this.dim;
    const G = new Float32Array(this.w.length);
    const hit = new Set<number>();
    rowIdx.forEach((r, i) => { hit.add(r); for (let j = 0; j < d; j++) G[r * d + j] += grads[i * d + j]!; });
    for (const r of hit) {
      const t = ++this.t[r]!;
      for (let j = 0; j < d; j++) {
        const k = r * d + j, g = G[k]!, o = this.opt;
        if (o.kind === 'sgd') this.w[k] -= o.lr * g;
        else if (o.kind === 'adagrad') { this.a[k] += g * g; this.w[k] -= (o.lr * g) / (Math.sqrt(this.a[k]!) + o.eps); }
        else {
          this.a[k] = o.beta1 * this.a[k]! + (1 - o.beta1) * g;
          this.b[k] = o.beta2 * this.b[k]! + (1 - o.beta2) * g * g;
          const mhat = this.a[k]! / (1 - o.beta1 ** t), vhat = this.b[k]! / (1 - o.beta2 ** t);
          this.w[k] -= (o.lr * mhat) / (Math.sqrt(vhat) + o.eps);
        }
      }
    }
  }
}

const OPTS: SparseOptimizerConfig[] = [
  { kind: 'sgd', lr: 0.5 },
  { kind: 'adagrad', lr: 0.3, eps: 1e-10, initialAccumulator: 0.1 },
  { kind: 'adam', lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8 },
];

for (const opt of OPTS) {
  test(`server-side ${opt.kind} equals a dense reference, duplicate ids summed`, () => {
    const dim = 6, V = 40;
    const s = shardWith({ dim, optimizer: opt });
    const universe = Array.from({ length: V }, (_, i) => i * 31 + 5);
    const ref = new DenseRef(opt, dim, look(s, universe));
    let x = 99;
    const r = (): number => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x / 2 ** 32; };
    for (let step = 0; step < 25; step++) {
      const rowIdx = Array.from({ length: 30 }, () => Math.floor(r() * r() * V)); // skewed: many duplicates
      const grads = Float32Array.from({ length: rowIdx.length * dim }, () => r() - 0.5);
      s.push(G, pairs(rowIdx.map((i) => universe[i]!)), rowIdx.length, grads, true);
      ref.step(rowIdx, grads);
    }
    const got = look(s, universe, true);
    for (let k = 0; k < got.length; k++) {
      assert.ok(Math.abs(got[k]! - ref.w[k]!) <= 1e-6 * Math.max(1, Math.abs(ref.w[k]!)), `${opt.kind} value ${k}: ${got[k]} vs ${ref.w[k]}`);
    }
    assert.ok(ref.t.some((t) => t > 3) && ref.t.some((t) => t === 0), 'some rows updated often, some never');
  });
}

test('dump/load round trip keeps rows, optimizer state, LRU order and step', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-test-'));
  try {
    const opt: SparseOptimizerConfig = { kind: 'adam', lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    const mk = (): EmbeddingShard => shardWith({ dim: 5, optimizer: opt, capacity: 1000 });
    const a = mk();
    const ids = Array.from({ length: 300 }, (_, i) => i * 13 + 1);
    for (let st = 0; st < 5; st++) {
      const batch = ids.filter((_, i) => (i + st) % 3 !== 0);
      a.push(G, pairs(batch), batch.length, Float32Array.from({ length: batch.length * 5 }, (_, k) => Math.sin(k + st)), true);
    }
    look(a, [ids[7]!, ids[3]!]);
    const m = await dumpShard(a, dir, 'rt1');
    assert.equal(m.groups[0]!.count, a.table(G).count);
    const b = mk();
    const res = loadShard(b, dir);
    assert.equal(res.rowsLoaded, a.table(G).count);
    assert.equal(b.step, a.step);
    assert.deepEqual(lruRaw(b), lruRaw(a));
    assert.deepEqual(look(b, ids, true), look(a, ids, true));
    // Optimizer state and per-row steps came along: further training stays identical.
    const g = Float32Array.from({ length: ids.length * 5 }, (_, k) => Math.cos(k));
    a.push(G, pairs(ids), ids.length, g, true);
    b.push(G, pairs(ids), ids.length, g, true);
    assert.deepEqual(look(b, ids, true), look(a, ids, true));
    // The manifest's optimizer wins over the config's.
    const c = shardWith({ dim: 5, optimizer: { kind: 'sgd', lr: 1 } });
    loadShard(c, dir);
    assert.equal(c.table(G).cfg.optimizer.kind, 'adam');
    assert.throws(() => loadShard(shardWith({ dim: 6 }), dir), /dim 5 in the checkpoint, 6 in the config/);
    assert.throws(() => loadShard(mk(), dir, 'nope'), /no complete embedding checkpoint/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('in-process re-shard 1 -> 4 keeps every row on the shard its hash names', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-test-'));
  try {
    const a = shardWith({ dim: 3, optimizer: { kind: 'adagrad', lr: 0.1, eps: 1e-10, initialAccumulator: 0 } });
    const ids = Array.from({ length: 1000 }, (_, i) => i);
    a.push(G, pairs(ids), ids.length, Float32Array.from({ length: 3000 }, (_, k) => k % 7), true);
    await dumpShard(a, dir, 'x');
    let total = 0;
    for (let i = 0; i < 4; i++) {
      const s = shardWith({ dim: 3 }, {}, i, 4);
      total += loadShard(s, dir).rowsLoaded;
      const mine = ids.filter((id) => { const p = pairs([id]); return shardOf(p[1]!, p[0]!, 4) === i; });
      assert.equal(s.table(G).count, mine.length);
      assert.deepEqual(s.lookup(G, pairs(mine), mine.length, true), look(a, mine, true));
      assert.throws(() => s.lookup(G, pairs([ids.find((id) => !mine.includes(id))!]), 1, true), /does not belong to shard/);
    }
    assert.equal(total, 1000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('capacity accounting separates addressable from resident parameters', () => {
  const s = shardWith({ dim: 16, idBits: 40, optimizer: { kind: 'adam', lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-8 } }, {}, 0, 2);
  const mine = Array.from({ length: 400 }, (_, i) => i).filter((id) => { const p = pairs([id]); return shardOf(p[1]!, p[0]!, 2) === 0; });
  look(s, mine);
  const st = s.stats();
  const g = st.groups[0]!;
  assert.equal(g.addressableParams, (2 ** 40 * 16) / 2);
  assert.equal(g.rows, mine.length);
  assert.equal(g.residentParams, mine.length * (16 + 32));
  assert.equal(g.residentEmbeddingParams, mine.length * 16);
  assert.ok(g.residentBytes >= g.residentParams * 4 && g.allocatedBytes >= g.residentBytes);
  assert.equal(st.residentParams, g.residentParams);
});

test('lookupWire encodes exactly what lookup + encodeValues would send', async () => {
  const { encodeValues } = await import('../src/recsys/protocol.js');
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    const s = shardWith({ dim: 7, admitProbability: 0.5, init: { kind: 'uniform', scale: 3 } });
    const ids = Array.from({ length: 200 }, (_, i) => i * 3);
    look(s, ids.slice(0, 100));
    const ref = look(shardWith({ dim: 7, admitProbability: 0.5, init: { kind: 'uniform', scale: 3 } }), ids.slice(0, 100));
    assert.deepEqual(look(s, ids.slice(0, 100), true), ref);
    const want = new Uint8Array(200 * 7 * 4), got = new Uint8Array(200 * 7 * 4);
    const rows = look(s, ids, true);
    encodeValues(dtype, rows, rows.length, want);
    s.table(G).lookupWire(pairs(ids), ids.length, dtype, got, s.step, true);
    assert.deepEqual(got, want, dtype);
  }
});
