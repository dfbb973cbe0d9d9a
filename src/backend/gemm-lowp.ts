// Mixed-precision GEMM: bf16 or fp16 operands (Uint16Array), fp32 accumulation and
// output. oneDNN runs it natively where the CPU has an implementation (AVX512_BF16 /
// AMX for bf16, AVX512_FP16 for fp16); elsewhere (e.g. AVX2-only CPUs, where oneDNN
// 2.x has no bf16 matmul) the operands are widened to fp32 in a scratch buffer and
// the fp32 GEMM runs: the numerics are still those of bf16/fp16 inputs with fp32
// accumulation, the speed is fp32's minus the conversion. A one-time notice says which.
//
// Also the strided 2-D conversions that ops use to make 16-bit operands (native/cast.c,
// reference in reference/lowp.ts).
import { nativeFamily, notice } from './native.js';
import { nativeMinElements } from './dispatch.js';
import { gemm } from './blas.js';
import { dnnlMatmul, dnnlExec, dnnlStatus } from './dnnl.js';
import { attnSoftmax16Ref, attnSoftmaxBwd16Ref, from16Ref, to16Ref, type Lowp } from './reference/lowp.js';

export type { Lowp } from './reference/lowp.js';
const KIND: Record<Lowp, number> = { bfloat16: 1, float16: 2 };

interface LowpNative {
  to16: (kind: number, rows: number, cols: number, x: Float32Array, xOff: number, ldx: number, y: Uint16Array, yOff: number, ldy: number, scale: number) => void;
  from16: (kind: number, rows: number, cols: number, x: Uint16Array, xOff: number, ldx: number, y: Float32Array, yOff: number, ldy: number) => void;
}

const lowpNative = nativeFamily<LowpNative>({
  to16: 'void athn_f32_to_16_2d(int, int64_t, int64_t, const float *, int64_t, int64_t, _Inout_ uint16_t *, int64_t, int64_t, float)',
  from16: 'void athn_16_to_f32_2d(int, int64_t, int64_t, const uint16_t *, int64_t, int64_t, _Inout_ float *, int64_t, int64_t)',
});

/** y = round16(x · scale) over a rows × cols matrix with leading dimensions ldx, ldy. */
export function to16(kind: Lowp, rows: number, cols: number, x: Float32Array, xOff: number, ldx: number,
  y: Uint16Array, yOff: number, ldy: number, scale = 1): void {
  if (rows === 0 || cols === 0) return;
  const k = rows * cols >= nativeMinElements() ? lowpNative() : null;
  if (k) k.to16(KIND[kind], rows, cols, x, xOff, ldx, y, yOff, ldy, scale);
  else to16Ref(kind, rows, cols, x, xOff, ldx, y, yOff, ldy, scale);
}

/** y = float(x) over a rows × cols matrix. */
export function from16(kind: Lowp, rows: number, cols: number, x: Uint16Array, xOff: number, ldx: number,
  y: Float32Array, yOff: number, ldy: number): void {
  if (rows === 0 || cols === 0) return;
  const k = rows * cols >= nativeMinElements() ? lowpNative() : null;
  if (k) k.from16(KIND[kind], rows, cols, x, xOff, ldx, y, yOff, ldy);
  else from16Ref(kind, rows, cols, x, xOff, ldx, y, yOff, ldy);
}

let scratchA = new Float32Array(0), scratchB = new Float32Array(0);
const noticed = new Set<Lowp>();
const stats = { native: 0, widened: 0 };

function widenedNotice(kind: Lowp): void {
  if (noticed.has(kind)) return;
  noticed.add(kind);
  const st = dnnlStatus();
  notice(st.available
    ? `oneDNN ${st.version} has no ${kind} matmul for this CPU (ISA ${st.isa}); ${kind} GEMMs run as fp32 GEMMs on widened operands (${kind} numerics, not ${kind} speed)`
    : `oneDNN unavailable (${st.note}); ${kind} GEMMs run as fp32 GEMMs on widened operands`);
}

/** How many mixed-precision GEMMs ran natively in oneDNN and how many were widened to fp32. */
export function lowpGemmStats(): { native: number; widened: number } {
  return { ...stats };
}

/**
 * C[m×n] (fp32) = alpha · op(A) · op(B) + beta · C, row-major, A and B 16-bit of `kind`
 * (the transposes, leading dimensions and offsets are those of BLAS).
 */
export function gemmLowp(kind: Lowp, transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Uint16Array, aOff: number, lda: number, b: Uint16Array, bOff: number, ldb: number, beta: number,
  c: Float32Array, cOff: number, ldc: number): void {
  if (m === 0 || n === 0) return;
  if (k === 0) {
    if (beta !== 1) for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) c[cOff + i * ldc + j] = beta === 0 ? 0 : beta * c[cOff + i * ldc + j]!;
    return;
  }
  const p = dnnlMatmul(kind, transA, transB, m, n, k, lda, ldb, ldc, alpha, beta);
  if (p) {
    stats.native++;
    dnnlExec(p, aOff ? a.subarray(aOff) : a, bOff ? b.subarray(bOff) : b, cOff ? c.subarray(cOff) : c);
    return;
  }
  stats.widened++;
  widenedNotice(kind);
  const ar = transA ? k : m, ac = transA ? m : k, br = transB ? n : k, bc = transB ? k : n;
  if (scratchA.length < ar * ac) scratchA = new Float32Array(ar * ac);
  if (scratchB.length < br * bc) scratchB = new Float32Array(br * bc);
  from16(kind, ar, ac, a, aOff, lda, scratchA, 0, ac);
  from16(kind, br, bc, b, bOff, ldb, scratchB, 0, bc);
  gemm(transA, transB, m, n, k, alpha, scratchA, 0, ac, scratchB, 0, bc, beta, c, cOff, ldc);
}

interface AttnLowpNative {
  softmax16: (S: Float32Array, P16: Uint16Array, mats: number, Tq: number, Tk: number, scale: number, causal: number, kind: number) => void;
  softmaxBwd16: (P16: Uint16Array, dP: Float32Array, mats: number, Tq: number, Tk: number, alpha: number, causal: number, kind: number) => void;
}

const attnLowpNative = nativeFamily<AttnLowpNative>({
  softmax16: 'void athn_attn_softmax_16out(_Inout_ float *, _Inout_ uint16_t *, int64_t, int64_t, int64_t, float, int, int)',
  softmaxBwd16: 'void athn_attn_softmax_bwd_16in(const uint16_t *, _Inout_ float *, int64_t, int64_t, int64_t, float, int, int)',
});

/** Attention softmax (fp32 math) writing the probabilities in 16 bits (native/attention-lowp.c). */
export function attnSoftmax16(S: Float32Array, P16: Uint16Array, mats: number, Tq: number, Tk: number, scale: number, causal: boolean, kind: Lowp): void {
  const k = mats * Tq * Tk >= nativeMinElements() ? attnLowpNative() : null;
  if (k) k.softmax16(S, P16, mats, Tq, Tk, scale, causal ? 1 : 0, KIND[kind]);
  else attnSoftmax16Ref(S, P16, mats, Tq, Tk, scale, causal, kind);
}

/** Attention softmax backward reading 16-bit probabilities, fp32 math, in place on dP. */
export function attnSoftmaxBwd16(P16: Uint16Array, dP: Float32Array, mats: number, Tq: number, Tk: number, alpha: number, causal: boolean, kind: Lowp): void {
  const k = mats * Tq * Tk >= nativeMinElements() ? attnLowpNative() : null;
  if (k) k.softmaxBwd16(P16, dP, mats, Tq, Tk, alpha, causal ? 1 : 0, KIND[kind]);
  else attnSoftmaxBwd16Ref(P16, dP, mats, Tq, Tk, alpha, causal, kind);
}
