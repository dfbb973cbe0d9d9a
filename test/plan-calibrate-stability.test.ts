// The calibration's stability pieces (src/plan/calibrate-compute.ts, calibrate-overhead.ts):
// the cold-operand arena hands out disjoint, aligned operands and cycles through more than
// the last-level cache before reusing one; the co-running factor is the median of each
// round's own ratio. No timing asserted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ColdArena, attentionTable, gemmTables, lastLevelCacheBytes } from '../src/plan/calibrate-compute.js';
import { pairedRatio } from '../src/plan/calibrate-overhead.js';

test('ColdArena: operands of a call are disjoint and 64-float aligned; reuse only after twice the cache', () => {
  const llc = 1 << 16; // bytes: a small arena, so that the test wraps it
  const arena = new ColdArena(3000, llc);
  assert.ok(arena.data.length >= (2 * llc) / 4 + 3000);
  const seen = new Map<number, number>(); // offset -> floats streamed when last handed out
  let streamed = 0;
  for (let call = 0; call < 200; call++) {
    const sizes = [700 + (call % 5), 300, 999];
    const offs = arena.take(sizes);
    offs.forEach((o, i) => {
      assert.equal(o % 64, 0);
      assert.ok(o + sizes[i]! <= arena.data.length);
      if (i > 0) assert.ok(o >= offs[i - 1]! + sizes[i - 1]!, 'operands of one call overlap');
      const last = seen.get(o);
      if (last !== undefined) assert.ok(streamed - last >= (2 * llc) / 4 - 3000, `offset ${o} reused after ${streamed - last} floats`);
      seen.set(o, streamed);
    });
    streamed += sizes.reduce((a, n) => a + Math.ceil(n / 64) * 64, 0);
  }
  assert.throws(() => arena.take([arena.data.length + 1]), /exceeds the arena/);
});

test('lastLevelCacheBytes: a positive size where sysfs has one, else null', () => {
  const b = lastLevelCacheBytes();
  assert.ok(b === null || (Number.isInteger(b) && b > 0));
});

test('pairedRatio: the median of per-round ratios, not the ratio of medians', () => {
  // Load doubles both runs of the last two rounds: the per-round ratio stays 1.2.
  assert.equal(pairedRatio([1, 1, 1, 2, 2], [1.2, 1.2, 1.2, 2.4, 2.4]).toFixed(6), '1.200000');
  // The ratio of medians would pair an alone run of one load with a together run of another.
  assert.equal(pairedRatio([1, 2, 2], [2.4, 1.2, 2.4]).toFixed(6), '1.200000');
  assert.throws(() => pairedRatio([1], [1, 2]), /1 alone runs against 2/);
});

test('gemmTables on cold operands: every role and shape measured, finite positive rates', () => {
  const t = gemmTables(1);
  for (const role of ['nt', 'nn', 'tn'] as const) {
    assert.equal(t[role].length, 19);
    for (const [, , , r] of t[role]) assert.ok(Number.isFinite(r) && r > 0);
  }
});

test('attentionTable on the model\'s operand layout: every [T, D] measured, shares of the ceiling finite and positive', () => {
  const t = attentionTable(50e9, 1);
  assert.equal(t.length, 9);
  for (const [T, D, f, b] of t) {
    assert.ok([128, 256, 512].includes(T) && [32, 64, 128].includes(D));
    assert.ok(Number.isFinite(f) && f > 0 && Number.isFinite(b) && b > 0);
  }
});
