// The DLRM dot interaction: native kernel against the TypeScript reference (float32,
// overwrite and accumulate), and the op against the composition it replaces
// (concat → batched Z Zᵀ → upper-triangle gather → concat with x), forward and backward.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { Rng } from '../src/core/rng.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { backward } from '../src/autograd/tape.js';
import { nativeDotInteraction } from '../src/backend/dot-interaction-kernels.js';
import * as ref from '../src/backend/reference/dot-interaction.js';
import { dotInteraction, interactionPairs } from '../src/ops/dot-interaction.js';
import { concat, gather, matmul, reshape, permute } from '../src/ops/index.js';

const nat = nativeDotInteraction();
const skip = skipUnless(nat !== null, 'native kernel library (node scripts/build-native.mjs)');

function randF32(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  new Rng(seed).fillNormal(a);
  return a;
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let w = 0;
  for (let i = 0; i < a.length; i++) w = Math.max(w, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
  return w;
}

for (const [B, F, D] of [[128, 26, 16], [5, 3, 7], [1, 1, 1], [33, 8, 64]] as const) {
  test(`dot interaction: native kernel equals the reference (B=${B}, F=${F}, D=${D}), overwrite and accumulate`, { skip }, () => {
    const W = D + interactionPairs(F);
    const x = randF32(B * D, 1), e = randF32(F * B * D, 2), g = randF32(B * W, 3);
    const outN = new Float32Array(B * W), outR = new Float32Array(B * W);
    assert.equal(nat!.fwd(x, e, outN, B, F, D), 0);
    ref.dotInteractionFwd(x, e, outR, B, F, D);
    assert.ok(maxRel(outN, outR) < 1e-5, `forward differs by ${maxRel(outN, outR)}`);
    for (const acc of [false, true]) {
      const dxN = randF32(B * D, 4), deN = randF32(F * B * D, 5), dxR = dxN.slice(), deR = deN.slice();
      assert.equal(nat!.bwd(g, x, e, dxN, deN, B, F, D, acc ? 1 : 0, acc ? 1 : 0), 0);
      ref.dotInteractionBwd(g, x, e, dxR, deR, B, F, D, acc, acc);
      assert.ok(maxRel(dxN, dxR) < 1e-4 && maxRel(deN, deR) < 1e-4, `backward (acc ${acc}) differs by ${maxRel(dxN, dxR)} / ${maxRel(deN, deR)}`);
    }
    // Either gradient may be left out.
    const dx = new Float32Array(B * D), dxR = new Float32Array(B * D);
    nat!.bwd(g, x, e, dx, null, B, F, D, 0, 0);
    ref.dotInteractionBwd(g, x, e, dxR, null, B, F, D, false, false);
    assert.ok(maxRel(dx, dxR) < 1e-4);
  });
}

/** What DLRM computed before the fused op: Z = concat(x, e_f), Z Zᵀ, gather i < j, concat with x. */
function composed(x: Tensor, eSampleMajor: Tensor, B: number, F: number, D: number): Tensor {
  const M = F + 1;
  const z = concat([reshape(x, [B, 1, D]), eSampleMajor], 1);
  const zz = reshape(matmul(z, z, { transB: true }), [B, M * M]);
  const idx = new Int32Array(B * interactionPairs(F));
  for (let b = 0, k = 0; b < B; b++) for (let i = 0; i < M; i++) for (let j = i + 1; j < M; j++) idx[k++] = i * M + j;
  return concat([x, gather(zz, fromStorage(idx, [B, interactionPairs(F)], 'int32'), 1)], 1);
}

test('dotInteraction equals the concat + batched matmul + gather it replaces (float32, forward and backward)', () => {
  const B = 64, F = 26, D = 16, W = D + interactionPairs(F);
  scope(() => {
    const xs = randF32(B * D, 7), es = randF32(B * F * D, 8), gs = randF32(B * W, 9);
    const leaf = (d: Float32Array, shape: number[]): Tensor => { const t = fromStorage(d.slice(), shape, 'float32'); t.requiresGrad = true; return t; };
    const x1 = leaf(xs, [B, D]), e1 = leaf(es, [B, F, D]);
    const y1 = composed(x1, e1, B, F, D);
    backward(y1, { grad: fromStorage(gs.slice(), [B, W], 'float32') });
    const x2 = leaf(xs, [B, D]), e2 = leaf(es, [B, F, D]);
    const y2 = dotInteraction(x2, permute(e2, [1, 0, 2]));
    backward(y2, { grad: fromStorage(gs.slice(), [B, W], 'float32') });
    const f = (t: Tensor): Float32Array => t.data as Float32Array;
    assert.ok(maxRel(f(y2), f(y1)) < 1e-5, `forward differs by ${maxRel(f(y2), f(y1))}`);
    assert.ok(maxRel(f(x2.grad!), f(x1.grad!)) < 1e-4, `dx differs by ${maxRel(f(x2.grad!), f(x1.grad!))}`);
    assert.ok(maxRel(f(e2.grad!), f(e1.grad!)) < 1e-4, `de differs by ${maxRel(f(e2.grad!), f(e1.grad!))}`);
  });
});

test('dotInteraction names the shape that does not fit', () => {
  scope(() => {
    const x = fromStorage(new Float32Array(6), [2, 3], 'float32');
    assert.throws(() => dotInteraction(x, fromStorage(new Float32Array(8), [2, 2, 2], 'float32')), /does not fit x/);
    assert.throws(() => dotInteraction(x, fromStorage(new Float32Array(6), [2, 3], 'float32')), /must be \(B, D\) and e \(F, B, D\)/);
  });
});
