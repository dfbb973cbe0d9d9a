// The vocab-parallel cross-entropy's native row loops (native/vocab-parallel.c, float32)
// against their TypeScript references run in float64 on the same inputs, including
// ignored rows, targets held by another rank, and accumulation into an existing gradient;
// and the op over two simulated ranks (vocabulary halves) against the fused single-process
// cross-entropy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { Rng } from '../src/core/rng.js';
import { fromStorage } from '../src/core/tensor.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { nativeKernels } from '../src/backend/native.js';
import * as ref from '../src/backend/reference/vocab-parallel.js';
import { vpceRowMax, vpceSumExp, vpceGrad } from '../src/backend/vocab-parallel-kernels.js';
import { vocabParallelCrossEntropy, type GroupCollectives } from '../src/ops/group.js';
import { crossEntropy } from '../src/ops/nn.js';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';
import { closeToReference } from './helpers/close-to-reference.js';

setNativeMinElements(0);
const skip = skipUnless(nativeKernels() !== null, 'native kernel library (node scripts/build-native.mjs)');
const rng = new Rng(7);
const randn = (n: number, scale: number): Float32Array => { const a = new Float32Array(n); rng.fillNormal(a, 0, scale); return a; };

const close = closeToReference;

test('vocab-parallel cross-entropy row loops: native equals the float64 reference', { skip }, () => {
  for (const [N, Vl] of [[1, 1], [5, 7], [9, 33], [17, 1000]] as const) {
    const vocabStart = 3 * Vl, V = 4 * Vl;
    const z = randn(N * Vl, 4);
    // Targets: held here, held by another rank, and ignored.
    const t = new Int32Array(N).map((_, i) => (i % 3 === 0 ? vocabStart + ((i * 5) % Vl) : i % 3 === 1 ? (i * 11) % vocabStart : -100));
    void V;
    const max = new Float32Array(N), max64 = new Float64Array(N);
    vpceRowMax(z, N, Vl, max);
    ref.vpceRowMax(Float64Array.from(z), N, Vl, max64);
    close(max, max64, `row max ${N}x${Vl}`, 0, 0);
    const sums = new Float32Array(2 * N), sums64 = new Float64Array(2 * N);
    vpceSumExp(z, N, Vl, max, t, vocabStart, -100, sums);
    ref.vpceSumExp(Float64Array.from(z), N, Vl, max64, t, vocabStart, -100, sums64);
    close(sums, sums64, `sums ${N}x${Vl}`);
    for (const fresh of [true, false]) {
      const g0 = randn(N * Vl, 1);
      const g = g0.slice(), g64 = Float64Array.from(g0);
      vpceGrad(z, g, N, Vl, max, sums.subarray(0, N), t, vocabStart, -100, 0.25, fresh);
      ref.vpceGrad(Float64Array.from(z), g64, N, Vl, max64, sums64.subarray(0, N), t, vocabStart, -100, 0.25, fresh);
      close(g, g64, `grad ${N}x${Vl} fresh=${fresh}`);
    }
  }
});

test('vocab-parallel cross-entropy over two vocabulary halves equals the fused cross-entropy (loss and gradient)', { skip }, () => {
  const N = 24, V = 64, Vl = V / 2;
  const full = randn(N * V, 3);
  const t = new Int32Array(N).map((_, i) => (i === 5 ? -100 : (i * 13) % V));
  // One process plays both ranks: each half's forward is run with the other half's row
  // statistics combined through a recorded exchange (max, then sums), as the group would.
  const halves = [0, 1].map((r) => { const h = new Float32Array(N * Vl); for (let i = 0; i < N; i++) h.set(full.subarray(i * V + r * Vl, i * V + (r + 1) * Vl), i * Vl); return h; });
  // Each rank's own row maxima (the all-reduce combines them).
  const stats = halves.map((h) => { const m = new Float64Array(N); ref.vpceRowMax(h, N, Vl, m); return m; });
  // A two-rank group whose all-reduce returns the combination of both ranks' buffers.
  const grads: Float32Array[] = [];
  let loss = 0;
  for (const r of [0, 1]) {
    let call = 0;
    const g: GroupCollectives = {
      rank: r, size: 2, allGather: () => undefined, reduceScatter: () => undefined,
      allReduce: (b, op) => {
        const k = call++;
        if (k === 0) { for (let i = 0; i < b.length; i++) b[i] = Math.max(stats[0]![i]!, stats[1]![i]!); return; }
        // The sums depend on the global max: recompute each rank's with it.
        const mx = new Float32Array(N);
        for (let i = 0; i < N; i++) mx[i] = Math.max(stats[0]![i]!, stats[1]![i]!);
        const tot = new Float64Array(2 * N);
        for (const q of [0, 1]) { const s = new Float64Array(2 * N); ref.vpceSumExp(halves[q]!, N, Vl, mx, t, q * Vl, -100, s); for (let i = 0; i < 2 * N; i++) tot[i]! += s[i]!; }
        void op;
        b.set(tot);
      },
    };
    scope(() => {
      const z = fromStorage(halves[r]!, [N, Vl], 'float32');
      z.requiresGrad = true;
      const l = vocabParallelCrossEntropy(z, fromStorage(t, [N], 'int32'), g, r * Vl, V);
      loss = l.item();
      backward(l);
      grads.push(Float32Array.from(z.grad!.data as Float32Array));
    });
  }
  scope(() => {
    const z = fromStorage(full.slice(), [N, V], 'float32');
    z.requiresGrad = true;
    const l = crossEntropy(z, fromStorage(t, [N], 'int32'));
    close([loss], [l.item()], 'loss', 1e-5, 1e-6);
    backward(l);
    const gFull = z.grad!.data as Float32Array;
    for (const r of [0, 1]) {
      const want = new Float32Array(N * Vl);
      for (let i = 0; i < N; i++) want.set(gFull.subarray(i * V + r * Vl, i * V + (r + 1) * Vl), i * Vl);
      close(grads[r]!, want, `gradient of half ${r}`, 1e-4, 1e-7);
    }
  });
});
