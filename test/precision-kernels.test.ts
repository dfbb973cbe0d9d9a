// Mixed-precision kernels: the strided 16-bit conversions (native/cast.c) against their
// TypeScript references bit for bit; the mixed-precision GEMM (oneDNN or widened) against
// the fp32 reference GEMM on the same 16-bit-rounded inputs, for every transpose and odd
// sizes and leading dimensions; matmul/linear and attention forward + backward in bf16
// and fp16 against fp32 within the format's tolerance; the fp32 oneDNN GEMM against
// OpenBLAS; the dynamic loss scaler.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { nativeKernels } from '../src/backend/native.js';
import { gemmLowp, to16, from16, attnSoftmax16, attnSoftmaxBwd16, lowpGemmStats, setWidenPanelElements } from '../src/backend/gemm-lowp.js';
import { from16Ref, to16Ref, attnSoftmax16Ref, attnSoftmaxBwd16Ref, type Lowp } from '../src/backend/reference/lowp.js';
import { gemmReference, gemm } from '../src/backend/blas.js';
import { dnnlMatmul, dnnlExec, dnnlStatus } from '../src/backend/dnnl.js';
import { setF32GemmMode, gemmChoices } from '../src/backend/gemm-select.js';
import { withPrecision, type Precision } from '../src/backend/precision.js';
import { lowpOperand, markWeightsUpdated, lowpWeightCasts } from '../src/backend/lowp-tensor.js';
import { Rng } from '../src/core/rng.js';
import { randn, mul } from '../src/ops/elementwise.js';
import { linear } from '../src/ops/matmul.js';
import { attention } from '../src/ops/attention.js';
import { permute } from '../src/ops/shape.js';
import { sum } from '../src/ops/reduce.js';
import { backward } from '../src/autograd/tape.js';
import { DynamicLossScaler } from '../src/optim/loss-scaler.js';

setNativeMinElements(0);
const rng = new Rng(7);
const KINDS: Lowp[] = ['bfloat16', 'float16'];
const randArr = (n: number, s = 1) => { const a = new Float32Array(n); rng.fillNormal(a); for (let i = 0; i < n; i++) a[i]! *= s; return a; };

test('strided 16-bit conversions match the TypeScript reference bit for bit (odd sizes, leading dims, scale, specials)', { skip: nativeKernels() ? false : 'native library not built' }, () => {
  for (const kind of KINDS) {
    for (const [rows, cols, ldx] of [[1, 1, 1], [3, 7, 9], [17, 33, 40], [64, 129, 129]] as const) {
      const x = randArr(rows * ldx, 3);
      x[0] = NaN; if (x.length > 2) { x[1] = Infinity; x[2] = -1e30; }
      for (const scale of [1, 1024]) {
        const yN = new Uint16Array(rows * (cols + 2)).fill(0xabcd), yR = yN.slice();
        to16(kind, rows, cols, x, 0, ldx, yN, 1, cols + 2, scale);
        to16Ref(kind, rows, cols, x, 0, ldx, yR, 1, cols + 2, scale);
        assert.deepEqual(yN, yR, `${kind} to16 ${rows}x${cols} ld ${ldx} scale ${scale}`);
        const zN = new Float32Array(rows * ldx).fill(5), zR = zN.slice();
        from16(kind, rows, cols, yN, 1, cols + 2, zN, 0, ldx);
        from16Ref(kind, rows, cols, yN, 1, cols + 2, zR, 0, ldx);
        assert.deepEqual(new Uint32Array(zN.buffer), new Uint32Array(zR.buffer), `${kind} from16 ${rows}x${cols}`);
      }
    }
  }
});

test('attention softmax with 16-bit probabilities (forward out, backward in) matches its reference', { skip: nativeKernels() ? false : 'native library not built' }, () => {
  for (const kind of KINDS) {
    for (const [mats, Tq, Tk, causal] of [[1, 1, 1, true], [2, 7, 7, true], [3, 33, 45, false], [2, 130, 130, true]] as const) {
      const n = mats * Tq * Tk, S = randArr(n, 2), dP = randArr(n);
      const pN = new Uint16Array(n), pR = new Uint16Array(n);
      attnSoftmax16(S.slice(), pN, mats, Tq, Tk, 0.3, causal, kind);
      attnSoftmax16Ref(S.slice(), pR, mats, Tq, Tk, 0.3, causal, kind);
      const fN = new Float32Array(n), fR = new Float32Array(n);
      from16Ref(kind, 1, n, pN, 0, n, fN, 0, n);
      from16Ref(kind, 1, n, pR, 0, n, fR, 0, n);
      // fast_expf vs Math.exp can move a value across a 16-bit rounding boundary: one ulp.
      const ulp = kind === 'bfloat16' ? 2 ** -7 : 2 ** -10;
      for (let i = 0; i < n; i++) assert.ok(Math.abs(fN[i]! - fR[i]!) <= ulp * Math.abs(fR[i]!) + 1e-7, `${kind} P[${i}] ${fN[i]} vs ${fR[i]}`);
      if (causal) for (let r = 0; r < mats * Tq; r++) for (let j: number = (r % Tq) + 1; j < Tk; j++) assert.equal(pN[r * Tk + j], 0, 'masked');
      const gN = dP.slice(), gR = dP.slice();
      attnSoftmaxBwd16(pR, gN, mats, Tq, Tk, 0.7, causal, kind);
      attnSoftmaxBwd16Ref(pR, gR, mats, Tq, Tk, 0.7, causal, kind);
      for (let i = 0; i < n; i++) assert.ok(Math.abs(gN[i]! - gR[i]!) <= 1e-5 * (1 + Math.abs(gR[i]!)), `${kind} dS[${i}] ${gN[i]} vs ${gR[i]}`);
    }
  }
});

function checkLowpGemms(): void {
  for (const kind of KINDS) {
    for (const [m, n, k] of [[1, 1, 1], [5, 3, 7], [33, 17, 65], [70, 129, 31]] as const) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          for (const [alpha, beta] of [[1, 0], [0.5, 1]] as const) {
            const lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
            const aRows = ta ? k : m, bRows = tb ? n : k;
            const a = randArr(aRows * lda), b = randArr(bRows * ldb);
            const a16 = new Uint16Array(a.length), b16 = new Uint16Array(b.length);
            to16(kind, 1, a.length, a, 0, a.length, a16, 0, a.length);
            to16(kind, 1, b.length, b, 0, b.length, b16, 0, b.length);
            const aw = new Float32Array(a.length), bw = new Float32Array(b.length);
            from16(kind, 1, a.length, a16, 0, a.length, aw, 0, a.length);
            from16(kind, 1, b.length, b16, 0, b.length, bw, 0, b.length);
            const c0 = randArr(m * ldc);
            const c = c0.slice(), ref = Array.from(c0);
            gemmLowp(kind, ta, tb, m, n, k, alpha, a16, 0, lda, b16, 0, ldb, beta, c, 0, ldc);
            gemmReference(ta, tb, m, n, k, alpha, aw, 0, lda, bw, 0, ldb, beta, ref, 0, ldc);
            for (let i = 0; i < m; i++) {
              for (let j = 0; j < n; j++) {
                const r = ref[i * ldc + j]!, v = c[i * ldc + j]!;
                // fp32 accumulation of exactly representable products: only summation order differs.
                assert.ok(Math.abs(v - r) <= 1e-5 * (Math.sqrt(k) + Math.abs(r)), `${kind} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'} ${m}x${n}x${k} [${i},${j}]: ${v} vs ${r}`);
              }
              for (let j = n; j < ldc && i * ldc + j < c.length; j++) assert.equal(c[i * ldc + j], c0[i * ldc + j], 'padding untouched');
            }
          }
        }
      }
    }
  }
}

test('mixed-precision GEMM equals the fp32 GEMM of the rounded inputs, every transpose, alpha/beta, odd shapes', () => {
  checkLowpGemms();
});

test('widened GEMM in panels (bounded scratch) gives the same products: operands over the budget split by rows of op(A) or columns of op(B)', () => {
  const before = lowpGemmStats();
  const prev = setWidenPanelElements(40); // every shape above 40 elements per operand splits; panels of >= 16 rows/columns
  try {
    checkLowpGemms();
  } finally {
    setWidenPanelElements(prev);
  }
  const after = lowpGemmStats();
  if (after.widened > before.widened) assert.ok(after.panels > before.panels, 'the widened GEMMs ran in panels');
});

test('oneDNN fp32 matmul matches OpenBLAS for every transpose; auto mode records one choice per shape', { skip: dnnlStatus().available ? false : `oneDNN unavailable: ${dnnlStatus().note}` }, () => {
  for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    const m = 37, n = 45, k = 300;
    const a = randArr(m * k), b = randArr(k * n);
    const c1 = new Float32Array(m * n), c2 = new Float32Array(m * n);
    const p = dnnlMatmul('float32', ta, tb, m, n, k, ta ? m : k, tb ? k : n, n, 1, 0)!;
    assert.ok(p, 'fp32 primitive');
    dnnlExec(p, a, b, c1);
    gemm(ta, tb, m, n, k, 1, a, 0, ta ? m : k, b, 0, tb ? k : n, 0, c2, 0, n);
    for (let i = 0; i < c1.length; i++) assert.ok(Math.abs(c1[i]! - c2[i]!) <= 1e-4 * (1 + Math.abs(c2[i]!)), `${i}: ${c1[i]} vs ${c2[i]}`);
  }
  setF32GemmMode('auto');
  try {
    const m = 128, n = 128, k = 128, a = randArr(m * k), b = randArr(k * n), c = new Float32Array(m * n), ref = new Float32Array(m * n);
    for (let r = 0; r < 3; r++) gemm(false, true, m, n, k, 1, a, 0, k, b, 0, k, 0, c, 0, n);
    setF32GemmMode('openblas');
    gemm(false, true, m, n, k, 1, a, 0, k, b, 0, k, 0, ref, 0, n);
    for (let i = 0; i < c.length; i++) assert.ok(Math.abs(c[i]! - ref[i]!) <= 1e-4 * (1 + Math.abs(ref[i]!)));
  } finally {
    setF32GemmMode('openblas');
  }
});

test('auto mode: exactly one recorded choice per GEMM shape', { skip: dnnlStatus().available ? false : 'oneDNN unavailable' }, () => {
  setF32GemmMode('auto');
  try {
    const m = 96, n = 80, k = 160, a = randArr(m * k), b = randArr(k * n), c = new Float32Array(m * n);
    for (let r = 0; r < 3; r++) gemm(false, false, m, n, k, 1, a, 0, k, b, 0, n, 0, c, 0, n);
    const ch = gemmChoices();
    assert.equal(ch.length, 1);
    assert.ok(ch[0]!.lib === 'openblas' || ch[0]!.lib === 'onednn');
    assert.ok(ch[0]!.openblasS! > 0 && ch[0]!.onednnS! > 0);
  } finally {
    setF32GemmMode('openblas');
  }
});

function relErr(u: ArrayLike<number>, v: ArrayLike<number>): number {
  let n = 0, d = 0;
  for (let i = 0; i < u.length; i++) { n += (u[i]! - v[i]!) ** 2; d += u[i]! ** 2; }
  return Math.sqrt(n / d);
}

// Relative L2 error bounds: a few units of the format's rounding (bf16 2^-9, fp16 2^-12).
const TOL: Record<Precision, number> = { fp32: 0, bf16: 1.2e-2, fp16: 1.5e-3 };

test('linear forward and both gradients in bf16/fp16 track fp32 (strided input, bias)', () => {
  const x = permute(randn([37, 3, 65], rng), [1, 0, 2]); x.requiresGrad = true; x.keep();
  const w = randn([29, 65], rng); w.requiresGrad = true; w.keep();
  const b = randn([29], rng); b.requiresGrad = true; b.keep();
  const c = randn([3, 37, 29], rng).keep();
  const run = (p: Precision) => withPrecision(p, () => {
    x.grad = w.grad = b.grad = null;
    markWeightsUpdated();
    const y = linear(x, w, b);
    backward(sum(mul(y, c)));
    return [Float32Array.from(y.data as Float32Array), Float32Array.from(x.grad!.data as Float32Array), Float32Array.from(w.grad!.data as Float32Array), Float32Array.from(b.grad!.data as Float32Array)];
  });
  const f = run('fp32');
  for (const p of ['bf16', 'fp16'] as const) {
    const r = run(p);
    for (let i = 0; i < 3; i++) {
      const e = relErr(f[i]!, r[i]!);
      assert.ok(e > 0 && e < TOL[p], `${p} output ${i}: relative error ${e}`);
    }
    assert.ok(relErr(f[3]!, r[3]!) < 1e-6, 'bias gradient is an fp32 column sum');
  }
});

test('attention forward and q/k/v gradients in bf16/fp16 track fp32 (causal, blocked rows, strided views)', () => {
  const mk = () => { const t = randn([2, 150, 3, 16], rng); t.requiresGrad = true; return t.keep(); };
  const q = mk(), k = mk(), v = mk(), c = randn([2, 3, 150, 16], rng).keep();
  const run = (p: Precision) => withPrecision(p, () => {
    q.grad = k.grad = v.grad = null;
    const y = attention(permute(q, [0, 2, 1, 3]), permute(k, [0, 2, 1, 3]), permute(v, [0, 2, 1, 3]));
    backward(sum(mul(y, c)));
    return [Float32Array.from(y.data as Float32Array), ...[q, k, v].map((t) => Float32Array.from(t.grad!.data as Float32Array))];
  });
  const f = run('fp32');
  for (const p of ['bf16', 'fp16'] as const) {
    const r = run(p);
    for (let i = 0; i < 4; i++) {
      const e = relErr(f[i]!, r[i]!);
      assert.ok(e > 0 && e < TOL[p], `${p} output ${i}: relative error ${e}`);
    }
  }
});

test('parameter copies are made once per weight update, not on every use', () => {
  const w = randn([8, 8], rng); w.requiresGrad = true; w.keep();
  markWeightsUpdated();
  const c0 = lowpWeightCasts();
  for (let i = 0; i < 3; i++) lowpOperand(w, 'bfloat16').dispose();
  assert.equal(lowpWeightCasts() - c0, 1);
  (w.data as Float32Array)[0] = 3;
  markWeightsUpdated();
  const t = lowpOperand(w, 'bfloat16');
  assert.equal(lowpWeightCasts() - c0, 2);
  assert.equal((t.data as Uint16Array)[0], 0x4040, 'the new value (3.0 in bf16)');
  t.dispose();
});

test('dynamic loss scaler: backs off on overflow, grows after the window, stops at the minimum', () => {
  const s = new DynamicLossScaler({ initScale: 1024, growthInterval: 3, minScale: 256 });
  assert.equal(s.update(true), 'backoff'); assert.equal(s.scale, 512);
  assert.equal(s.update(false), null); assert.equal(s.update(false), null);
  assert.equal(s.update(false), 'growth'); assert.equal(s.scale, 1024);
  s.update(true); s.update(true);
  assert.equal(s.scale, 256);
  assert.equal(s.canBackOff(), false);
  assert.equal(s.update(true), null); assert.equal(s.scale, 256);
});

test('without oneDNN (ATHANOR_DNNL=0) bf16 GEMMs fall back to widened fp32 and say so once', () => {
  const gl = new URL('../src/backend/gemm-lowp.js', import.meta.url).href;
  const code = `import { gemmLowp, lowpGemmStats } from '${gl}';
    const a = new Uint16Array(12).fill(0x3f80), b = new Uint16Array(12).fill(0x4000), c = new Float32Array(9);
    for (let i = 0; i < 3; i++) gemmLowp('bfloat16', false, false, 3, 3, 4, 1, a, 0, 4, b, 0, 3, 0, c, 0, 3);
    console.log(JSON.stringify({ c: Array.from(c), stats: lowpGemmStats() }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, ATHANOR_DNNL: '0', ATHANOR_QUIET: '' } });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { c: number[]; stats: { native: number; widened: number; panels: number } };
  assert.deepEqual(out.c, new Array(9).fill(8), '1 · 2 summed over k = 4');
  assert.deepEqual(out.stats, { native: 0, widened: 3, panels: 0 });
  assert.equal(r.stderr.match(/oneDNN unavailable \(ATHANOR_DNNL=0\)/g)?.length, 1, r.stderr);
});
