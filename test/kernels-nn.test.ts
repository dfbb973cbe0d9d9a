// Native NN kernels (native/nn.c, float32) against their TypeScript references run in
// float64 on the same inputs; OpenBLAS GEMM against the reference GEMM; float32 ops
// on non-contiguous views (native path) against float64 ops (reference path).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { Rng } from '../src/core/rng.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { contiguousStrides } from '../src/core/layout.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { gemm, gemmReference, hasBlas } from '../src/backend/blas.js';
import { nativeNn } from '../src/backend/native-nn.js';
import * as ref from '../src/backend/reference/nn.js';
import { matmul } from '../src/ops/matmul.js';
import { attention } from '../src/ops/attention.js';
import { crossEntropy, layerNorm, logSoftmax, rmsNorm, softmax, embedding, dropout } from '../src/ops/nn.js';
import { backward } from '../src/autograd/tape.js';
import { scope } from '../src/core/scope.js';
import { closeToReference } from './helpers/close-to-reference.js';

setNativeMinElements(0);
const nat = nativeNn();
const skip = skipUnless(nat !== null, 'native kernel library (node scripts/build-native.mjs)');
const COLS = [1, 7, 33, 1000];
const rng = new Rng(42);

function randn(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  rng.fillNormal(a, 0, scale);
  return a;
}
const f64 = (a: Float32Array) => Float64Array.from(a);

const close = closeToReference;

test('softmax / logSoftmax forward and backward (acc and overwrite)', { skip }, () => {
  for (const cols of COLS) {
    for (const rows of [1, 5, 40]) {
      const n = rows * cols;
      const x = randn(n, 3), dy = randn(n), dx0 = randn(n);
      for (const [fwd, bwd, rfwd, rbwd] of [
        [nat!.softmaxFwd, nat!.softmaxBwd, ref.softmaxFwd, ref.softmaxBwd],
        [nat!.logSoftmaxFwd, nat!.logSoftmaxBwd, ref.logSoftmaxFwd, ref.logSoftmaxBwd],
      ] as const) {
        const y = new Float32Array(n), yr = new Float64Array(n);
        fwd(x, y, rows, cols);
        rfwd(f64(x), yr, rows, cols);
        close(y, yr, `fwd ${rows}x${cols}`);
        for (const acc of [1, 0]) {
          const dx = dx0.slice(), dxr = f64(dx0);
          bwd(y, dy, dx, rows, cols, acc);
          rbwd(f64(y), f64(dy), dxr, rows, cols, acc === 1);
          close(dx, dxr, `bwd ${rows}x${cols} acc=${acc}`, 1e-4, 1e-5);
        }
      }
    }
  }
});

test('cross-entropy forward (loss, lse) and backward', { skip }, () => {
  for (const V of COLS) {
    const rows = 37, n = rows * V;
    const x = randn(n, 2);
    const t = new Int32Array(rows).map((_, i) => (i % 5 === 0 ? -100 : rng.int(V)));
    const lse = new Float32Array(rows), lser = new Float64Array(rows);
    const tot = nat!.crossEntropyFwd(x, t, lse, rows, V, -100) as number;
    const totr = ref.crossEntropyFwd(f64(x), t, lser, rows, V, -100);
    close(lse, lser, `lse V=${V}`);
    close([tot], [totr], `loss V=${V}`, 1e-5, 1e-4);
    for (const acc of [1, 0]) {
      const d0 = randn(n);
      const d = d0.slice(), dr = f64(d0);
      nat!.crossEntropyBwd(x, t, lse, d, rows, V, -100, 0.3, acc);
      ref.crossEntropyBwd(f64(x), t, lser, dr, rows, V, -100, 0.3, acc === 1);
      close(d, dr, `bwd V=${V} acc=${acc}`, 1e-4, 1e-5);
    }
  }
});

test('layerNorm and rmsNorm forward and backward', { skip }, () => {
  for (const C of COLS) {
    for (const rows of [1, 9, 70]) {
      const n = rows * C;
      const x = randn(n, 2), w = randn(C), b = randn(C), dy = randn(n);
      const y = new Float32Array(n), mean = new Float32Array(rows), rstd = new Float32Array(rows);
      const yr = new Float64Array(n), meanr = new Float64Array(rows), rstdr = new Float64Array(rows);
      for (const withBias of [true, false]) {
        nat!.layerNormFwd(x, w, withBias ? b : null, y, mean, rstd, rows, C, 1e-5);
        ref.layerNormFwd(f64(x), f64(w), withBias ? f64(b) : null, yr, meanr, rstdr, rows, C, 1e-5);
        close(y, yr, `ln fwd ${rows}x${C}`, 1e-4, 1e-4);
        close(rstd, rstdr, `ln rstd ${rows}x${C}`, 1e-4);
      }
      for (const acc of [1, 0]) {
        const dx0 = randn(n), dw0 = randn(C), db0 = randn(C);
        const dx = dx0.slice(), dw = dw0.slice(), db = db0.slice();
        const dxr = f64(dx0), dwr = f64(dw0), dbr = f64(db0);
        nat!.layerNormBwd(dy, x, w, mean, rstd, dx, dw, db, rows, C, acc);
        ref.layerNormBwd(f64(dy), f64(x), f64(w), f64(mean), f64(rstd), dxr, dwr, dbr, rows, C, acc === 1);
        close(dx, dxr, `ln dx ${rows}x${C}`, 1e-3, 1e-3);
        close(dw, dwr, `ln dw ${rows}x${C}`, 1e-3, 1e-3);
        close(db, dbr, `ln db ${rows}x${C}`, 1e-4, 1e-4);
      }
      // null gradient outputs are skipped
      nat!.layerNormBwd(dy, x, w, mean, rstd, null, null, null, rows, C, 1);

      nat!.rmsNormFwd(x, w, y, rstd, rows, C, 1e-5);
      ref.rmsNormFwd(f64(x), f64(w), yr, rstdr, rows, C, 1e-5);
      close(y, yr, `rms fwd ${rows}x${C}`, 1e-4, 1e-4);
      const dx0 = randn(n), dw0 = randn(C);
      const dx = dx0.slice(), dw = dw0.slice(), dxr = f64(dx0), dwr = f64(dw0);
      nat!.rmsNormBwd(dy, x, w, rstd, dx, dw, rows, C, 1);
      ref.rmsNormBwd(f64(dy), f64(x), f64(w), f64(rstd), dxr, dwr, rows, C, true);
      close(dx, dxr, `rms dx ${rows}x${C}`, 1e-3, 1e-3);
      close(dw, dwr, `rms dw ${rows}x${C}`, 1e-3, 1e-3);
    }
  }
});

test('embedding forward (row stride) and backward with duplicate ids', { skip }, () => {
  for (const C of COLS) {
    const V = 11, ldw = C + 3, n = 50;
    const w = randn(V * ldw);
    const idx = new Int32Array(n).map(() => rng.int(V));
    idx[1] = idx[0]!;
    const out = new Float32Array(n * C), outr = new Float64Array(n * C);
    nat!.embeddingFwd(w, ldw, idx, out, n, C);
    ref.embeddingFwd(f64(w), ldw, idx, outr, n, C);
    close(out, outr, `emb fwd C=${C}`, 0, 0);
    const dout = randn(n * C), dw0 = randn(V * C);
    const dw = dw0.slice(), dwr = f64(dw0);
    nat!.embeddingBwd(dout, idx, dw, n, C);
    ref.embeddingBwd(f64(dout), idx, dwr, n, C);
    close(dw, dwr, `emb bwd C=${C}`, 1e-5, 1e-5);
  }
});

test('dropout: native mask bits equal the reference bits; backward', { skip }, () => {
  for (const n of [1, 7, 33, 1000, 70001]) {
    const x = randn(n), y = new Float32Array(n), yr = new Float64Array(n);
    const words = Math.ceil(n / 32);
    const m = new Int32Array(words), mr = new Int32Array(words);
    const p = 0.37, thr = p * 4294967296, scale = 1 / (1 - p);
    nat!.dropoutFwd(x, y, m, n, 123456789, thr, scale);
    ref.dropoutFwd(f64(x), yr, mr, n, 123456789, thr, scale);
    assert.deepEqual(m, mr, `mask n=${n}`);
    close(y, yr, `dropout fwd n=${n}`, 1e-6, 0);
    let kept = 0;
    for (let i = 0; i < n; i++) if (y[i] !== 0) kept++;
    if (n >= 1000) assert.ok(Math.abs(kept / n - (1 - p)) < 0.05, `keep rate ${kept / n}`);
    for (const acc of [1, 0]) {
      const dy = randn(n), d0 = randn(n);
      const d = d0.slice(), dr = f64(d0);
      nat!.dropoutBwd(dy, m, d, n, scale, acc);
      ref.dropoutBwd(f64(dy), m, dr, n, scale, acc === 1);
      close(d, dr, `dropout bwd n=${n}`, 1e-6, 1e-7);
    }
  }
});

test('attention softmax (causal and not) and its backward', { skip }, () => {
  for (const [Tq, Tk] of [[1, 1], [7, 7], [33, 40], [5, 1000]] as const) {
    for (const causal of [0, 1]) {
      const mats = 3, n = mats * Tq * Tk;
      const S = randn(n, 2), Sr = f64(S);
      nat!.attnSoftmax(S, mats, Tq, Tk, 0.5, causal);
      ref.attnSoftmax(Sr, mats, Tq, Tk, 0.5, causal === 1);
      close(S, Sr, `attn softmax ${Tq}x${Tk} causal=${causal}`);
      const dP = randn(n), dPr = f64(dP);
      nat!.attnSoftmaxBwd(S, dP, mats, Tq, Tk, 0.25, causal);
      ref.attnSoftmaxBwd(f64(S), dPr, mats, Tq, Tk, 0.25, causal === 1);
      close(dP, dPr, `attn softmax bwd ${Tq}x${Tk} causal=${causal}`, 1e-4, 1e-5);
    }
  }
});

test('bias gradient and row fill with ld > cols', { skip }, () => {
  for (const cols of COLS) {
    const rows = 45, ld = cols + 5;
    const dy = randn(rows * ld), db0 = randn(cols);
    const db = db0.slice(), dbr = f64(db0);
    nat!.biasGrad(dy, db, rows, cols, ld);
    ref.biasGrad(f64(dy), dbr, rows, cols, ld);
    close(db, dbr, `biasGrad cols=${cols}`, 1e-5, 1e-5);
    const y = randn(rows * ld), yr = f64(y), bias = randn(cols);
    nat!.fillRows(y, bias, rows, cols, ld);
    ref.fillRows(yr, f64(bias), rows, cols, ld);
    close(y, yr, `fillRows cols=${cols}`, 0, 0);
  }
});

test('blas.gemm matches gemmReference: NN/NT/TN/TT, offsets, ld > cols, alpha/beta', { skip: skipUnless(hasBlas(), 'OpenBLAS') }, () => {
  for (const [m, n, k] of [[1, 1, 1], [7, 33, 5], [33, 7, 64], [64, 65, 31]] as const) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        for (const Arr of [Float32Array, Float64Array]) {
          const lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 4;
          const aOff = 5, bOff = 3, cOff = 7;
          const a = Arr.from(randn(aOff + (ta ? k : m) * lda)), b = Arr.from(randn(bOff + (tb ? n : k) * ldb));
          const c0 = Arr.from(randn(cOff + m * ldc));
          const c = c0.slice(), cr = Float64Array.from(c0);
          gemm(ta, tb, m, n, k, 0.75, a, aOff, lda, b, bOff, ldb, 0.5, c, cOff, ldc);
          gemmReference(ta, tb, m, n, k, 0.75, a, aOff, lda, b, bOff, ldb, 0.5, cr, cOff, ldc);
          close(c, cr, `gemm ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${m}x${n}x${k} ${Arr.name}`, 1e-4, 1e-4);
        }
      }
    }
  }
});

// ---- ops on non-contiguous float32 inputs (native) vs float64 (reference) ----

function pair(shape: number[], strides?: number[], baseLen?: number, offset = 0): [Tensor, Tensor] {
  const n = baseLen ?? shape.reduce((a, b) => a * b, 1);
  const d = randn(n);
  const st = strides ?? contiguousStrides(shape);
  const a = fromStorage(d, [n], 'float32').view(shape, st, offset);
  const b = fromStorage(f64(d), [n], 'float64').view(shape, st, offset);
  a.requiresGrad = true;
  b.requiresGrad = true;
  return [a, b];
}

function grads(t: Tensor): number[] {
  return t.grad ? t.grad.toArray() : [];
}

test('ops on transposed/strided views: float32 native equals float64 reference', { skip }, () => {
  scope(() => {
    // x (5, 33) stored transposed
    const [x32, x64] = pair([5, 33], [1, 5], 165);
    for (const f of [softmax, logSoftmax] as const) {
      const y32 = f(x32), y64 = f(x64);
      close(y32.toArray(), y64.toArray(), `${f.name} on a transposed view`);
    }
    const [w32, w64] = pair([33]);
    const [b32, b64] = pair([33]);
    const l32 = layerNorm(x32, w32, b32), l64 = layerNorm(x64, w64, b64);
    close(l32.toArray(), l64.toArray(), 'layerNorm on a transposed view', 1e-4, 1e-4);
    const r32 = rmsNorm(x32, w32), r64 = rmsNorm(x64, w64);
    close(r32.toArray(), r64.toArray(), 'rmsNorm on a transposed view', 1e-4, 1e-4);
    // logits (4, 1000) as a row-strided slice of (4, 1010)
    const [z32, z64] = pair([4, 1000], [1010, 1], 4040, 5);
    const t = fromStorage(new Int32Array([3, -100, 999, 0]), [4], 'int32');
    const c32 = crossEntropy(z32, t), c64 = crossEntropy(z64, t);
    close([c32.item()], [c64.item()], 'crossEntropy on a strided view', 1e-5, 1e-5);
    backward(c32);
    backward(c64);
    close(grads(z32), grads(z64), 'crossEntropy grad', 1e-4, 1e-6);
    // matmul on a transposed A view and a row-slice B
    const [a32, a64] = pair([33, 7], [1, 33], 231);
    const [m32, m64] = pair([7, 9], [12, 1], 7 * 12, 2);
    close(matmul(a32, m32).toArray(), matmul(a64, m64).toArray(), 'matmul on views', 1e-4, 1e-4);
    // embedding from a row-strided table
    const [e32, e64] = pair([6, 33], [40, 1], 240);
    const ids = fromStorage(new Int32Array([5, 0, 5, 2]), [2, 2], 'int32');
    close(embedding(e32, ids).toArray(), embedding(e64, ids).toArray(), 'embedding on a strided table', 0, 0);
    // dropout on a transposed view (same seed, same mask on both dtypes)
    close(dropout(x32, 0.5, { rng: new Rng(3) }).toArray(), dropout(x64, 0.5, { rng: new Rng(3) }).toArray(), 'dropout on a view', 1e-6, 0);
  });
});

test('attention on qkv-strided views: float32 native equals float64 reference, fwd and bwd', { skip }, () => {
  scope(() => {
    for (const [T, causal] of [[7, true], [33, false], [200, true]] as const) {
      const B = 2, H = 2, D = 8, C = H * D;
      const base = randn(B * T * 3 * C);
      const mk = (Arr: typeof Float32Array | typeof Float64Array, dt: 'float32' | 'float64') => {
        const bt = fromStorage(Arr.from(base), [B, T, 3 * C], dt);
        return [0, 1, 2].map((i) => {
          const v = bt.view([B, H, T, D], [T * 3 * C, D, 3 * C, 1], i * C);
          v.requiresGrad = true;
          return v;
        });
      };
      const [q32, k32, v32] = mk(Float32Array, 'float32') as [Tensor, Tensor, Tensor];
      const [q64, k64, v64] = mk(Float64Array, 'float64') as [Tensor, Tensor, Tensor];
      const o32 = attention(q32, k32, v32, { causal }), o64 = attention(q64, k64, v64, { causal });
      close(o32.toArray(), o64.toArray(), `attention T=${T} causal=${causal}`, 1e-4, 1e-5);
      const g = randn(o32.size);
      backward(o32, { grad: fromStorage(g, o32.shape, 'float32') });
      backward(o64, { grad: fromStorage(f64(g), o64.shape, 'float64') });
      for (const [a, b, nm] of [[q32, q64, 'dq'], [k32, k64, 'dk'], [v32, v64, 'dv']] as const) {
        close(grads(a), grads(b), `attention ${nm} T=${T}`, 1e-3, 1e-4);
      }
    }
  });
});
