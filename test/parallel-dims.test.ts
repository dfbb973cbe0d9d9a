import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ParallelDims } from '../src/parallel/parallel-dims.js';

test('ParallelDims validates once with clear messages', () => {
  assert.throws(() => new ParallelDims({ world: 8, dp: 2, tp: 2, pp: 1 }), /dp\*tp\*pp = 2\*2\*1 = 4 does not equal the world size 8/);
  assert.throws(() => new ParallelDims({ world: 6, tp: 4 }), /not divisible by tp\*pp/);
  assert.throws(() => new ParallelDims({ world: 8, tp: 2, ep: 3 }), /ep = 3 must divide dp = 4/);
  assert.throws(() => new ParallelDims({ world: 8, tp: 0 }), /tp must be a positive integer/);
  const d = new ParallelDims({ world: 16, tp: 2, pp: 2, ep: 2 });
  assert.deepEqual([d.dp, d.tp, d.pp, d.ep, d.edp], [4, 2, 2, 2, 2]);
});

test('rank order: tp fastest, then dp (ep inside dp), then pp', () => {
  const d = new ParallelDims({ world: 16, tp: 2, pp: 2, ep: 2 });
  assert.deepEqual(d.coords(0), { tp: 0, dp: 0, pp: 0, ep: 0, edp: 0 });
  assert.deepEqual(d.coords(1), { tp: 1, dp: 0, pp: 0, ep: 0, edp: 0 });
  assert.deepEqual(d.coords(2), { tp: 0, dp: 1, pp: 0, ep: 1, edp: 0 });
  assert.deepEqual(d.coords(8), { tp: 0, dp: 0, pp: 1, ep: 0, edp: 0 });
  assert.deepEqual(d.groupRanks('tp', 5), [4, 5]);
  assert.deepEqual(d.groupRanks('dp', 5), [1, 3, 5, 7]);
  assert.deepEqual(d.groupRanks('pp', 5), [5, 13]);
  assert.deepEqual(d.groupRanks('ep', 5), [5, 7]);
  assert.deepEqual(d.groupRanks('edp', 5), [1, 5]);
  // Every dimension partitions the world.
  for (const dim of ['tp', 'dp', 'pp', 'ep', 'edp'] as const) {
    const all = d.allGroups(dim).flat().sort((a, b) => a - b);
    assert.deepEqual(all, [...Array(16).keys()], dim);
  }
});

test('the rank order can be changed (fastest first): dp fastest makes dp groups contiguous', () => {
  const d = new ParallelDims({ world: 8, tp: 2, pp: 2, order: ['dp', 'tp', 'pp'] });
  assert.deepEqual(d.groupRanks('dp', 0), [0, 1]);
  assert.deepEqual(d.groupRanks('tp', 0), [0, 2]);
  assert.deepEqual(d.groupRanks('pp', 0), [0, 4]);
  for (let r = 0; r < 8; r++) assert.equal(d.rankOf(d.coords(r)), r);
  assert.throws(() => new ParallelDims({ world: 8, tp: 2, order: ['tp', 'dp', 'dp'] as never }), /order must list tp, dp and pp once each/);
});
