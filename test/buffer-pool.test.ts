// The caching allocator keeps steady-state sizes across steps and drops sizes that a whole
// step did not use (an MoE layer's rows per expert change with the routing every step).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../src/core/buffer-pool.js';

test('buffer pool: a size used every step stays pooled; a size unused for a whole step is dropped', () => {
  const p = new BufferPool();
  const steady = 4096, oneOff = [1000, 1500, 2000, 2500];
  let steadyBuf = p.acquire('float32', steady);
  for (let step = 0; step < oneOff.length; step++) {
    // Each step: the steady size is released and re-acquired (a hit after the first step),
    // plus one size seen only this step.
    p.release('float32', steadyBuf);
    steadyBuf = p.acquire('float32', steady);
    p.release('float32', p.acquire('float32', oneOff[step]!));
    p.endStep();
  }
  p.release('float32', steadyBuf);
  const s = p.stats();
  // A size new in step t is dropped by endStep() of step t: idle now is the steady buffer
  // only (no one-off size sits idle through the next step).
  assert.equal(s.pooledBytes, 4 * steady, `idle bytes ${s.pooledBytes}`);
  assert.ok(s.hits >= oneOff.length - 1, `the steady size is reused (hits ${s.hits})`);
  // A dropped size is a miss again; a kept one is a hit.
  const misses = p.stats().misses;
  p.acquire('float32', oneOff[0]!);
  assert.equal(p.stats().misses, misses + 1, 'a size unused for a whole step was dropped');
  p.acquire('float32', steady);
  assert.equal(p.stats().misses, misses + 1, 'the steady size was kept');
});

test('buffer pool: a one-off size is dropped at its own endStep; if it recurs in the next step it is kept from then on', () => {
  const p = new BufferPool();
  p.release('float32', p.acquire('float32', 3000));
  assert.equal(p.endStep(), 12000, 'new this step: its idle buffer dropped at once');
  const m0 = p.stats().misses;
  p.release('float32', p.acquire('float32', 3000));
  assert.equal(p.stats().misses, m0 + 1, 'dropped, so a miss');
  assert.equal(p.endStep(), 0, 'used in two consecutive steps: kept');
  p.release('float32', p.acquire('float32', 3000));
  assert.equal(p.stats().misses, m0 + 1, 'steady now: a hit');
  assert.equal(p.endStep(), 0);
});

test('buffer pool: endStep reports the bytes it dropped', () => {
  const p = new BufferPool();
  p.release('float32', p.acquire('float32', 1000));
  assert.equal(p.endStep(), 4000, 'new this step: dropped');
  p.release('float32', p.acquire('float32', 1000));
  assert.equal(p.endStep(), 0, 'used in two steps running: kept');
  assert.equal(p.endStep(), 4000, 'unused for the whole next step: dropped');
  assert.equal(p.stats().pooledBytes, 0);
});

test('buffer pool: forget drops a steady size now (every dtype), and its later releases are one-off', () => {
  const p = new BufferPool();
  for (let s = 0; s < 2; s++) { p.release('float32', p.acquire('float32', 2000)); p.release('int32', p.acquire('int32', 2000)); p.release('float32', p.acquire('float32', 500)); p.endStep(); }
  assert.equal(p.stats().pooledBytes, 8000 + 8000 + 2000, 'steady sizes kept');
  const held = p.acquire('float32', 2000); // in use when forgotten: a hit, then released later
  assert.equal(p.forget(2000), 8000, 'the idle int32 buffer of that size goes (the float32 one is in use)');
  assert.equal(p.stats().pooledBytes, 2000, 'other sizes stay');
  p.release('float32', held);
  const m0 = p.stats().misses;
  p.release('float32', p.acquire('float32', 500));
  assert.equal(p.stats().misses, m0, 'the other size is still a hit');
  assert.equal(p.endStep(), 8000, 'released after forget: one-off, dropped at the step end');
});
