import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IndexedDataset, SeededRng, TokenLoader, seededPermutation, writeIndexedDataset, type TokenBatch, type TokenSource,
} from '../src/data/index.js';

/** Token i of the stream is i (mod 65536), so every window tells where it came from. */
function rampSource(n: number): TokenSource {
  return {
    numTokens: n,
    readTokens(start, count, out) {
      const o = out ?? new Int32Array(count);
      for (let i = 0; i < count; i++) o[i] = start + i;
      return o;
    },
  };
}

const rows = (b: TokenBatch): number[] => Array.from({ length: b.B }, (_, r) => b.x[r * b.T]! / b.T);

test('windows: W = floor((n-1)/T), x/y shifted by one, each window once per epoch', () => {
  const T = 8, n = 8 * 20 + 1;
  const L = new TokenLoader(rampSource(n), { T, seed: 3 });
  assert.equal(L.numWindows, 20);
  assert.equal(new TokenLoader(rampSource(n - 1), { T }).numWindows, 19);
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    const b = L.next(4);
    assert.equal(b.x.length, 4 * T);
    for (let r = 0; r < 4; r++) {
      const start = b.x[r * T]!;
      assert.equal(start % T, 0);
      for (let t = 0; t < T; t++) {
        assert.equal(b.x[r * T + t], start + t);
        assert.equal(b.y[r * T + t], start + t + 1);
      }
      seen.push(start / T);
    }
  }
  assert.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
  assert.notDeepEqual(seen, Array.from({ length: 20 }, (_, i) => i)); // shuffled
  assert.equal(L.state().epoch, 1);
  assert.equal(L.state().cursor, 0);
  // The next epoch is a different permutation of the same windows.
  const e1 = Array.from({ length: 5 }, () => rows(L.next(4))).flat();
  assert.deepEqual([...e1].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
  assert.notDeepEqual(e1, seen);
  assert.throws(() => new TokenLoader(rampSource(8), { T: 8 }), /fewer than T\+1=9/);
  assert.throws(() => new TokenLoader(rampSource(100), { T: 8, rank: 2, worldSize: 2 }), /option 'rank' 2 outside/);
});

test('same seed, same batches; other seed, other batches; shuffle=false is stream order', () => {
  const a = new TokenLoader(rampSource(10_000), { T: 16, seed: 42 });
  const b = new TokenLoader(rampSource(10_000), { T: 16, seed: 42 });
  const c = new TokenLoader(rampSource(10_000), { T: 16, seed: 43 });
  const ba = a.next(8), bb = b.next(8), bc = c.next(8);
  assert.deepEqual(ba.x, bb.x);
  assert.deepEqual(ba.y, bb.y);
  assert.notDeepEqual(ba.x, bc.x);
  const s = new TokenLoader(rampSource(10_000), { T: 16, shuffle: false });
  assert.deepEqual(rows(s.next(3)), [0, 1, 2]);
  assert.deepEqual(rows(s.next(3)), [3, 4, 5]);
});

test('resume: N batches straight equal N/2, state() through JSON, restore(), N/2 more (across epochs)', () => {
  const src = rampSource(64 * 37 + 5);
  const N = 20, B = 5, opts = { T: 64, seed: 1234 };
  const straight = new TokenLoader(src, opts);
  const all = Array.from({ length: N }, () => straight.next(B));
  assert.ok(straight.epoch >= 2, 'run crosses epoch boundaries');

  const first = new TokenLoader(src, opts);
  const firstHalf = Array.from({ length: N / 2 }, () => first.next(B));
  const saved = JSON.parse(JSON.stringify(first.state()));
  assert.deepEqual(Object.keys(saved).sort(), ['T', 'cursor', 'epoch', 'numWindows', 'seed', 'shuffle', 'version']);
  const second = new TokenLoader(src, { T: 64, seed: 999 }); // the state's seed wins
  second.restore(saved);
  const secondHalf = Array.from({ length: N / 2 }, () => second.next(B));
  assert.deepEqual([...firstHalf, ...secondHalf], all);

  assert.throws(() => new TokenLoader(src, { T: 32 }).restore(saved), /field 'T' is 64, but this loader has T=32/);
  assert.throws(() => new TokenLoader(rampSource(64 * 40), opts).restore(saved), /field 'numWindows' is 37, but this dataset has 39/);
  assert.throws(() => second.restore({ ...saved, cursor: 37 }), /field 'cursor' is 37/);
});

test('data parallel: ranks take disjoint slices; dp=2 x B=4 equals dp=1 x B=8 per global batch', () => {
  const src = rampSource(32 * 50 + 1);
  const single = new TokenLoader(src, { T: 32, seed: 5 });
  const r0 = new TokenLoader(src, { T: 32, seed: 5, rank: 0, worldSize: 2 });
  const r1 = new TokenLoader(src, { T: 32, seed: 5, rank: 1, worldSize: 2 });
  for (let g = 0; g < 15; g++) { // 15 * 8 = 120 samples: crosses two epoch boundaries (W = 50)
    const full = single.next(8);
    const a = r0.next(4), b = r1.next(4);
    assert.deepEqual(full.x, Int32Array.from([...a.x, ...b.x]), `global batch ${g}`);
    assert.deepEqual(full.y, Int32Array.from([...a.y, ...b.y]));
  }
  // Within an epoch, the ranks never share a window.
  const q0 = new TokenLoader(src, { T: 32, seed: 9, rank: 0, worldSize: 2 });
  const q1 = new TokenLoader(src, { T: 32, seed: 9, rank: 1, worldSize: 2 });
  const w0 = Array.from({ length: 6 }, () => rows(q0.next(4))).flat();
  const w1 = Array.from({ length: 6 }, () => rows(q1.next(4))).flat();
  assert.equal(new Set([...w0, ...w1]).size, 48);
  // dp=4 x B=2 too, and the states of all ranks agree.
  const four = [0, 1, 2, 3].map((rank) => new TokenLoader(src, { T: 32, seed: 5, rank, worldSize: 4 }));
  const ref = new TokenLoader(src, { T: 32, seed: 5 });
  for (let g = 0; g < 5; g++) {
    assert.deepEqual(ref.next(8).x, Int32Array.from(four.flatMap((l) => [...l.next(2).x])));
  }
  assert.deepEqual(four[3]!.state(), ref.state());
});

test('evalBatches: sequential, sharded, at least one batch, capped', () => {
  const src = rampSource(16 * 10 + 1);
  const L = new TokenLoader(src, { T: 16, seed: 1 });
  const before = L.state();
  assert.deepEqual([...L.evalBatches(3)].map(rows), [[0, 1, 2], [3, 4, 5], [6, 7, 8]]);
  assert.deepEqual([...L.evalBatches(3, 2)].map(rows), [[0, 1, 2], [3, 4, 5]]);
  assert.deepEqual([...L.evalBatches(16)].map(rows), [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5]]);
  assert.deepEqual(L.state(), before);
  const r1 = new TokenLoader(src, { T: 16, rank: 1, worldSize: 2 });
  assert.deepEqual([...r1.evalBatches(2)].map(rows), [[2, 3], [6, 7]]);
});

test('loader over a real indexed dataset: documents concatenated with EOS between them', () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-data-loader-'));
  try {
    const docs = [[1, 2, 3, 256], [4, 5, 256], [6, 7, 8, 9, 256], [10, 256]];
    writeIndexedDataset(join(dir, 'd'), docs, 'uint16');
    const ds = IndexedDataset.open(join(dir, 'd'));
    const flat = docs.flat();
    const L = new TokenLoader(ds, { T: 4, shuffle: false });
    assert.equal(L.numWindows, Math.floor((flat.length - 1) / 4));
    const b = L.next(3);
    assert.deepEqual([...b.x], flat.slice(0, 12));
    assert.deepEqual([...b.y], flat.slice(1, 13));
    ds.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('seeded rng: reproducible, unbiased range, permutation is a permutation', () => {
  const a = new SeededRng(1), b = new SeededRng(1);
  const xs = Array.from({ length: 10 }, () => a.nextUint32());
  assert.deepEqual(xs, Array.from({ length: 10 }, () => b.nextUint32()));
  assert.ok(xs.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32));
  const counts = new Array(6).fill(0);
  const r = new SeededRng(2);
  for (let i = 0; i < 60000; i++) counts[r.nextInt(6)]++;
  assert.ok(counts.every((c) => c > 9500 && c < 10500), String(counts));
  const p = seededPermutation(1000, 77);
  assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 1000 }, (_, i) => i));
  assert.deepEqual(p, seededPermutation(1000, 77));
});
