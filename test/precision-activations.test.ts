// Activations saved for backward in bf16 (train.precision=bf16): the bf16 variants of the
// fused kernels (native/nn-lowp.c and LayerNorm backward in native/nn.c) against their
// TypeScript references on odd sizes (and sizes that take the OpenMP path); the ops on
// strided views in bf16 against fp32, after their fp32 inputs were released; the GPT's
// activation memory in bf16 against fp32 (about half), and recomputation in bf16.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nativeMinElements, setNativeMinElements } from '../src/backend/dispatch.js';
import { nativeKernels } from '../src/backend/native.js';
import * as N from '../src/backend/nn-lowp-kernels.js';
import * as R from '../src/backend/reference/nn-lowp.js';
import { bf16ToF32 } from '../src/core/dtype.js';
import { Rng } from '../src/core/rng.js';
import { scope } from '../src/core/scope.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { withPrecision, type Precision } from '../src/backend/precision.js';
import { markWeightsUpdated } from '../src/backend/lowp-tensor.js';
import { backward } from '../src/autograd/tape.js';
import { activationBytes, releaseActivation } from '../src/autograd/saved-pack.js';
import { randn, mul } from '../src/ops/elementwise.js';
import { scale, gelu } from '../src/ops/unary.js';
import { permute, slice } from '../src/ops/shape.js';
import { sum } from '../src/ops/reduce.js';
import { layerNorm, crossEntropy, softmax } from '../src/ops/nn.js';
import { GPT } from '../src/nn/gpt.js';
import { skipUnless } from './helpers/require-native.js';

const rng = new Rng(11);
const randArr = (n: number, s = 1) => { const a = new Float32Array(n); rng.fillNormal(a); for (let i = 0; i < n; i++) a[i]! *= s; return a; };
const SIZES: [number, number][] = [[1, 1], [3, 7], [17, 33], [129, 263]]; // the last one takes the OpenMP path

function close(what: string, a: ArrayLike<number>, b: ArrayLike<number>, rel: number): void {
  assert.equal(a.length, b.length, what);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    assert.ok(Number.isFinite(a[i]!) === Number.isFinite(b[i]!), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  assert.ok(num <= rel * Math.max(den, 1e-6), `${what}: max |diff| ${num} > ${rel} · ${den}`);
}

const native = skipUnless(nativeKernels() !== null, 'native kernel library');

test('bf16 saved-activation kernels match their TypeScript references (odd sizes, accumulate or overwrite)', { skip: native }, () => {
  const prevMin = nativeMinElements();
  setNativeMinElements(0);
  try {
    for (const [rows, C] of SIZES) {
      const n = rows * C;
      const x = randArr(n, 2), dy = randArr(n), base = randArr(n);
      // GELU
      const yN = new Float32Array(n), yR = new Float32Array(n), hN = new Uint16Array(n), hR = new Uint16Array(n);
      N.geluFwdBf16Pack(n, x, yN, hN);
      R.geluFwdBf16PackRef(n, x, yR, hR);
      close(`gelu fwd ${rows}x${C}`, yN, yR, 1e-5);
      assert.deepEqual(hN, hR, 'gelu bf16 copy is bit-exact');
      for (const acc of [false, true]) {
        const dN = base.slice(), dR = base.slice();
        N.geluBwdBf16In(n, hN, dy, dN, acc);
        R.geluBwdBf16InRef(n, hR, dy, dR, acc);
        close(`gelu bwd ${rows}x${C} acc=${acc}`, dN, dR, 1e-5);
      }
      // LayerNorm (with and without bias)
      const w = randArr(C), b = randArr(C);
      for (const bias of [b, null]) {
        const mN = new Float32Array(rows), mR = new Float32Array(rows), rN = new Float32Array(rows), rR = new Float32Array(rows);
        N.layerNormFwdBf16Pack(x, w, bias, yN, mN, rN, hN, rows, C, 1e-5);
        R.layerNormFwdBf16PackRef(x, w, bias, yR, mR, rR, hR, rows, C, 1e-5);
        close(`layerNorm fwd ${rows}x${C}`, yN, yR, 1e-5);
        close('layerNorm mean', mN, mR, 1e-5);
        close('layerNorm rstd', rN, rR, 1e-5);
        assert.deepEqual(hN, hR, 'layerNorm bf16 copy is bit-exact');
        for (const acc of [false, true]) {
          const dN = base.slice(), dR = base.slice();
          const dwN = w.slice(), dwR = w.slice(), dbN = b.slice(), dbR = b.slice();
          N.layerNormBwdBf16In(dy, hN, w, mR, rR, dN, dwN, bias ? dbN : null, rows, C, acc);
          R.layerNormBwdBf16InRef(dy, hR, w, mR, rR, dR, dwR, bias ? dbR : null, rows, C, acc);
          close(`layerNorm bwd dx ${rows}x${C} acc=${acc}`, dN, dR, 1e-4);
          close('layerNorm bwd dw', dwN, dwR, 1e-4);
          close('layerNorm bwd db', dbN, dbR, 1e-4);
        }
      }
      // Cross-entropy (rows are positions, C the vocabulary), some targets ignored
      const t = new Int32Array(rows).map((_, i) => (i % 5 === 3 ? -100 : (i * 7919) % C));
      const lN = new Float32Array(rows), lR = new Float32Array(rows);
      const totN = N.crossEntropyFwdBf16Pack(x, t, lN, hN, rows, C, -100);
      const totR = R.crossEntropyFwdBf16PackRef(x, t, lR, hR, rows, C, -100);
      close(`crossEntropy fwd total ${rows}x${C}`, [totN], [totR], 1e-5);
      close('crossEntropy lse', lN, lR, 1e-5);
      assert.deepEqual(hN, hR, 'crossEntropy bf16 logits are bit-exact');
      for (const acc of [false, true]) {
        const dN = base.slice(), dR = base.slice();
        N.crossEntropyBwdBf16In(hN, t, lR, dN, rows, C, -100, 0.37, acc);
        R.crossEntropyBwdBf16InRef(hR, t, lR, dR, rows, C, -100, 0.37, acc);
        close(`crossEntropy bwd ${rows}x${C} acc=${acc}`, dN, dR, 1e-5);
      }
      // Softmax: the bf16 copy is of the output, rounded from each side's own fp32 output
      N.softmaxFwdBf16Pack(x, yN, hN, rows, C);
      R.softmaxFwdBf16PackRef(x, yR, hR, rows, C);
      close(`softmax fwd ${rows}x${C}`, yN, yR, 1e-5);
      close('softmax bf16 copy', Array.from(hN, bf16ToF32), Array.from(hR, bf16ToF32), 2 ** -8);
      for (const acc of [false, true]) {
        const dN = base.slice(), dR = base.slice();
        N.softmaxBwdBf16In(hR, dy, dN, rows, C, acc);
        R.softmaxBwdBf16InRef(hR, dy, dR, rows, C, acc);
        close(`softmax bwd ${rows}x${C} acc=${acc}`, dN, dR, 1e-5);
      }
    }
  } finally {
    setNativeMinElements(prevMin);
  }
});

/**
 * Runs f on a non-contiguous view of a fresh activation (not a leaf: it is scaled from
 * one), releases the activation's fp32 storage right after the forward (as the GPT does),
 * then runs backward. Returns the output, the gradient of the leaf and whether the
 * release freed the storage.
 */
function viewCase(p: Precision, shape: number[], f: (x: Tensor) => Tensor, seed: number): { y: number[]; g: number[]; released: boolean } {
  return withPrecision(p, () => scope(() => {
    const leaf = randn(shape, new Rng(seed), 'float32', 1.5);
    leaf.requiresGrad = true;
    const act = scale(leaf, 1);
    const x = permute(act, [1, 0, 2]); // rows strided: the op copies it dense first
    const y = f(x);
    const released = releaseActivation(act);
    const w = randn(y.shape, new Rng(seed + 1));
    backward(sum(mul(y, w)));
    return { y: y.toArray(), g: leaf.grad!.toArray(), released };
  }));
}

test('bf16 ops on strided views: forward as fp32, gradients within bf16 tolerance after the fp32 input was released', () => {
  const lnW = randn([37], new Rng(3)), lnB = randn([37], new Rng(4));
  lnW.requiresGrad = true; lnB.requiresGrad = true;
  const targets = fromStorage(new Int32Array(5 * 3).map((_, i) => (i === 4 ? -100 : (i * 13) % 37)), [5, 3], 'int32');
  const cases: [string, (x: Tensor) => Tensor][] = [
    ['gelu', (x) => gelu(x)],
    ['layerNorm', (x) => layerNorm(x, lnW, lnB)],
    ['softmax', (x) => softmax(x)],
    ['crossEntropy', (x) => crossEntropy(x, targets)],
  ];
  for (const [name, f] of cases) {
    const fp = viewCase('fp32', [3, 5, 37], f, 21);
    const bf = viewCase('bf16', [3, 5, 37], f, 21);
    assert.equal(fp.released, false, `${name}: fp32 keeps its input (backward reads it)`);
    assert.equal(bf.released, true, `${name}: bf16 kept a copy, so the fp32 input was released`);
    close(`${name} forward`, bf.y, fp.y, 1e-5);
    close(`${name} input gradient`, bf.g, fp.g, 2e-2);
  }
});

const tinyCfg = { nLayer: 2, nHead: 2, dModel: 64, dFF: 256, vocabSize: 256, seqLen: 32, tieEmbeddings: false, positions: 'learned' as const, dropout: 0, lnEps: 1e-5 };

function gptStep(p: Precision, recompute = false): { loss: number; bytes: number; grads: number[][] } {
  const model = new GPT(tinyCfg, { seed: 5, recompute });
  markWeightsUpdated();
  const B = 4, T = 32;
  const idx = fromStorage(new Int32Array(B * T).map((_, i) => (i * 7919 + 3) % 256), [B, T], 'int32');
  const tg = fromStorage(new Int32Array(B * T).map((_, i) => (i * 104729 + 11) % 256), [B, T], 'int32');
  return withPrecision(p, () => scope(() => {
    const l = model.loss(idx, tg);
    const bytes = activationBytes(l);
    backward(l);
    return { loss: l.item(), bytes, grads: model.parameters().map((q) => q.grad!.toArray()) };
  }));
}

test('GPT in bf16 holds about half the fp32 activation memory for backward, with fp32-close loss and gradients', () => {
  const f = gptStep('fp32'), b = gptStep('bf16');
  const ratio = b.bytes / f.bytes;
  console.log(`activation bytes held for backward: fp32 ${f.bytes}, bf16 ${b.bytes} (${ratio.toFixed(3)}×)`);
  assert.ok(ratio < 0.56, `bf16 holds ${ratio.toFixed(3)}× the fp32 activation bytes`);
  assert.ok(ratio > 0.4, `bf16 holds ${ratio.toFixed(3)}×: less than half would mean something was not kept`);
  close('loss', [b.loss], [f.loss], 1e-2);
  f.grads.forEach((g, i) => close(`grad ${i}`, b.grads[i]!, g, 5e-2));
});

test('GPT in bf16 with recomputation equals bf16 without it (released activations are recomputed, not read)', () => {
  const a = gptStep('bf16'), r = gptStep('bf16', true);
  assert.ok(r.bytes < a.bytes, `recomputation holds less (${r.bytes} vs ${a.bytes} bytes)`);
  assert.equal(r.loss, a.loss);
  a.grads.forEach((g, i) => assert.deepEqual(r.grads[i], g, `grad ${i}`));
});
