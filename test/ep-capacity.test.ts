// The row capacity of expert parallelism's routing-dependent buffers
// (parallel/expert-parallel-capacity.ts): a fixed geometric grid, held over a window.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CAPACITY_GROWTH, CAPACITY_WINDOW, RowCapacity, capacityRows } from '../src/parallel/expert-parallel-capacity.js';
import { collectGarbage } from '../src/core/collect-garbage.js';
import { BufferPool } from '../src/core/buffer-pool.js';

test('capacityRows: a grid value that holds the rows with at most 1/8 padding, the same for every row count in a grid cell', () => {
  let prev = 0;
  for (let r = 1; r <= 20000; r++) {
    const c = capacityRows(r);
    assert.ok(c >= r, `${c} < ${r}`);
    assert.ok(c <= Math.ceil(r * CAPACITY_GROWTH), `${r} rows → ${c}, more than ${CAPACITY_GROWTH}×`);
    assert.ok(c >= prev, 'monotone');
    if (c === prev) assert.equal(capacityRows(r - 1), c);
    prev = c;
  }
  // A few hundred distinct sizes over four decades of rows, not thousands.
  const sizes = new Set(Array.from({ length: 20000 }, (_, i) => capacityRows(i + 1)));
  assert.ok(sizes.size < 120, `${sizes.size} distinct capacities`);
  assert.equal(capacityRows(0), 0);
});

test('RowCapacity holds the largest need of the last CAPACITY_WINDOW forwards, then falls back', () => {
  const c = new RowCapacity();
  assert.equal(c.fit(4000), capacityRows(4000));
  assert.equal(c.fit(6000), capacityRows(6000));
  // Smaller needs keep the capacity (the buffers keep their size) ...
  for (let i = 0; i < CAPACITY_WINDOW - 2; i++) assert.equal(c.fit(3000 + (i % 7) * 100), capacityRows(6000));
  // ... until the large one leaves the window (the forward after the next).
  assert.equal(c.fit(4000), capacityRows(6000));
  assert.equal(c.fit(4000), capacityRows(4000));
});

test("collectGarbage frees at once the buffers a pool let go (a moved capacity's idle buffers), with or without --expose-gc", () => {
  const pool = new BufferPool();
  const n = 8 << 20; // 32 MiB of float32, idle in the pool as an old capacity's buffer would be
  // In a function of its own, so that nothing here keeps a reference once the pool lets it go.
  const park = (): void => { const b = pool.acquire('float32', n); (b as Float32Array).fill(1); pool.release('float32', b); };
  park();
  const held = process.memoryUsage().arrayBuffers;
  assert.equal(pool.forget(n), 4 * n);
  collectGarbage();
  const after = process.memoryUsage().arrayBuffers;
  assert.ok(held - after >= 0.9 * 4 * n, `array buffers ${held} → ${after}: the dropped 32 MiB were not freed`);
});
