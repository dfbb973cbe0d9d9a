// Single ops against PyTorch: test/golden/ops.safetensors (written by
// tools/gen-golden-ops.py with torch 1.13) holds float32 inputs, outputs and the
// gradients of sum(out * dy). Both the native kernels and the TypeScript reference
// path must reproduce them; the bf16 rounding must match bit for bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { f32ToBf16, bf16ToF32 } from '../src/core/dtype.js';
import * as op from '../src/ops/index.js';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';
import { AdamW } from '../src/optim/index.js';

const { tensors: G, metadata } = readSafetensors(join(projectRoot(), 'test', 'golden', 'ops.safetensors'));
const arr = (k: string): Float32Array => {
  const t = G.get(k);
  if (!t) throw new Error(`ops.safetensors has no '${k}'`);
  return t.data as Float32Array;
};
const leaf = (k: string): Tensor => {
  const t = fromStorage(Float32Array.from(arr(k)), [...G.get(k)!.shape], 'float32');
  t.requiresGrad = true;
  return t;
};
const cst = (k: string): Tensor => fromStorage(Float32Array.from(arr(k)), [...G.get(k)!.shape], 'float32');

/** max |got - want| / max(1, max |want|): float32 rounding differences only. */
function check(got: ArrayLike<number>, want: Float32Array, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let scale = 1, worst = 0;
  for (let i = 0; i < want.length; i++) if (Number.isFinite(want[i]!)) scale = Math.max(scale, Math.abs(want[i]!));
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(want[i]!)) { assert.equal(got[i], want[i], `${what}[${i}]`); continue; }
    worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  }
  assert.ok(worst / scale <= tol, `${what}: max difference ${worst} (relative ${worst / scale}) > ${tol}`);
}

/** One op: forward, then backward of sum(out * dy); checks out and the named gradients. */
function opCase(name: string, inputs: string[], f: (xs: Tensor[]) => Tensor, grads: [string, number][], tol: number): void {
  scope(() => {
    const xs = inputs.map(leaf);
    const y = f(xs);
    check(y.data as Float32Array, arr(`${name}.y`), tol, `${name}.y`);
    backward(op.sum(op.mul(y, cst(`${name}.dy`))));
    for (const [g, i] of grads) check(xs[i]!.grad!.data as Float32Array, arr(`${name}.${g}`), tol, `${name}.${g}`);
  });
}

for (const [label, minElements] of [['native kernels', 0], ['TypeScript reference', Number.POSITIVE_INFINITY]] as const) {
  test(`ops match PyTorch ${metadata.torch} (${label}): gelu(tanh), softmax with -inf, layerNorm, linear, cross-entropy`, () => {
    setNativeMinElements(minElements);
    try {
      // Measured: <= 2.8e-7 relative on every output and gradient (float32 rounding).
      const TOL = 1e-6;
      opCase('gelu', ['gelu.x'], ([x]) => op.gelu(x!), [['dx', 0]], TOL);
      opCase('softmax', ['softmax.x'], ([x]) => op.softmax(x!, -1), [['dx', 0]], TOL);
      opCase('layernorm', ['layernorm.x', 'layernorm.weight', 'layernorm.bias'], ([x, w, b]) => op.layerNorm(x!, w!, b!, 1e-5),
        [['dx', 0], ['dweight', 1], ['dbias', 2]], TOL);
      opCase('linear', ['linear.x', 'linear.weight', 'linear.bias'], ([x, w, b]) => op.linear(x!, w!, b!),
        [['dx', 0], ['dweight', 1], ['dbias', 2]], TOL);
      scope(() => {
        const logits = leaf('cross_entropy.logits');
        const t = G.get('cross_entropy.targets')!;
        const loss = op.crossEntropy(logits, fromStorage(Int32Array.from(t.data as Int32Array), [...t.shape], 'int32'), { ignoreIndex: -100 });
        check([loss.item()], arr('cross_entropy.loss'), TOL, 'cross_entropy.loss');
        backward(loss);
        check(logits.grad!.data as Float32Array, arr('cross_entropy.dlogits'), TOL, 'cross_entropy.dlogits');
      });
    } finally {
      setNativeMinElements(0);
    }
  });
}

test('AdamW after 1 and 5 steps matches torch.optim.AdamW (with and without weight decay)', () => {
  for (const [key, wd, steps] of [['adamw.p1', 0.1, 1], ['adamw.p5', 0.1, 5], ['adamw.p5_nowd', 0, 5]] as const) {
    const p = leaf('adamw.p0');
    const opt = new AdamW([p], { lr: 1e-2, betas: [0.9, 0.95], eps: 1e-8, weightDecay: wd });
    for (let s = 0; s < steps; s++) {
      p.grad = cst('adamw.g');
      opt.step();
    }
    check(p.data as Float32Array, arr(key), 1e-6, key);
  }
});

test('float32 -> bfloat16 rounding (ties to even, subnormals, overflow, NaN-free specials) is bit-exact with PyTorch', () => {
  const x = arr('bf16.x'), bits = G.get('bf16.bits')!.data as Int32Array, back = arr('bf16.back');
  for (let i = 0; i < x.length; i++) {
    assert.equal(f32ToBf16(x[i]!), bits[i], `bf16(${x[i]}) bits`);
    assert.ok(Object.is(bf16ToF32(f32ToBf16(x[i]!)), back[i]), `bf16(${x[i]}) -> ${back[i]}`);
  }
  const t = op.cast(fromStorage(Float32Array.from(x), [x.length], 'float32'), 'bfloat16');
  assert.deepEqual([...(t.data as Uint16Array)], [...bits]);
});
