// dtype casts through the public op: bf16 / f16 round trips against src/core/dtype.ts
// (NaN, Inf, subnormals, overflow), float64 and int32 conversions, views, gradients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/core/dtype.js';
import { fromStorage, tensor } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';
import * as op from '../src/ops/index.js';

const SPECIAL = [0, -0, 1, -1, 0.1, 1 / 3, 65504, 65519.99, 65520, 1e5, -1e5, 3.4e38, Infinity, -Infinity, NaN,
  6e-8, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, 6.1e-5, 6.09e-5, 1e-40, -1e-45, 1.00390625, 1.01171875, 1.0009765625, 257, 2049, -2.5e-6];

function same(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

for (const n of [SPECIAL.length, 1000]) {
  test(`float32 -> bf16/f16 -> float32 matches dtype.ts (${n} values)`, () => {
    const vals = Array.from({ length: n }, (_, i) => SPECIAL[i % SPECIAL.length]! * (i < SPECIAL.length ? 1 : 1 + i / 7));
    const x = tensor(vals, [n], 'float32');
    const b = op.cast(x, 'bfloat16'), h = op.cast(x, 'float16');
    assert.equal(b.dtype, 'bfloat16');
    for (let i = 0; i < n; i++) {
      assert.equal(b.data[i], f32ToBf16(x.data[i]!), `bf16 bits of ${x.data[i]}`);
      assert.equal(h.data[i], f32ToF16(x.data[i]!), `f16 bits of ${x.data[i]}`);
    }
    const bb = op.toFloat32Array(op.cast(b, 'float32')), hb = op.toFloat32Array(h);
    for (let i = 0; i < n; i++) {
      assert.ok(same(bb[i]!, Math.fround(bf16ToF32(b.data[i]!))), `bf16 -> f32 of ${vals[i]}`);
      assert.ok(same(hb[i]!, Math.fround(f16ToF32(h.data[i]!))), `f16 -> f32 of ${vals[i]}`);
    }
  });
}

test('16-bit casts of non-contiguous views and via float64', () => {
  const x = op.reshape(op.cast(tensor(Array.from({ length: 600 }, (_, i) => i / 7 - 40)), 'float32'), [20, 30]);
  const t = op.transpose(x, 0, 1);
  const h = op.cast(t, 'float16');
  const tv = op.toFloat32Array(t);
  for (let i = 0; i < 600; i++) assert.equal(h.data[i], f32ToF16(tv[i]!));
  const d = op.cast(t, 'float64');
  const hb = op.cast(d, 'bfloat16');
  for (let i = 0; i < 600; i++) assert.equal(hb.data[i], f32ToBf16(tv[i]!));
  assert.deepEqual(Array.from(op.toFloat32Array(op.cast(hb, 'float16'))), Array.from(op.toFloat32Array(op.cast(op.cast(hb, 'float32'), 'float16'))));
  assert.equal(op.cast(x, 'float32'), x, 'same dtype returns the tensor itself');
});

test('int32 casts truncate toward zero; bf16 fill stores the encoded value', () => {
  const x = tensor([-2.7, -0.5, 0.5, 2.7, 100.2], [5], 'float64');
  assert.deepEqual(Array.from(op.cast(x, 'int32').data), [-2, 0, 0, 2, 100]);
  assert.deepEqual(Array.from(op.toFloat32Array(op.cast(tensor([3, -4], [2], 'int32'), 'float16'))), [3, -4]);
  const b = op.cast(tensor([0, 0], [2]), 'bfloat16');
  op.fill(b, 1.5);
  assert.deepEqual(Array.from(op.toFloat32Array(b)), [1.5, 1.5]);
  assert.throws(() => op.cast(x, 'uint8' as never), /cast: unknown dtype 'uint8'/);
  assert.throws(() => op.gelu(op.cast(x, 'bfloat16')), /gelu: expected a float32 or float64 tensor, got bfloat16 \(cast it first\)/);
});

test('cast is differentiable between float32 and float64', () => {
  const x = fromStorage(Float64Array.from([1, 2, 3]), [3], 'float64');
  x.requiresGrad = true;
  scope(() => backward(op.sum(op.mul(op.cast(x, 'float32'), tensor([1, 2, 3])))));
  assert.equal(x.grad!.dtype, 'float64');
  assert.deepEqual(Array.from(x.grad!.data), [1, 2, 3]);
});
