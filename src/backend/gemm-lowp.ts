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
import { dnnlMatmul, dnnlExec, dnnlIsaBits, dnnlStatus } from './dnnl.js';
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
const stats = { native: 0, widened: 0, panels: 0 };

function widenedNotice(kind: Lowp): void {
  if (noticed.has(kind)) return;
  noticed.add(kind);
  const st = dnnlStatus();
  notice(st.available
    ? `oneDNN ${st.version} has no ${kind} matmul for this CPU (ISA ${st.isa}); ${kind} GEMMs run as fp32 GEMMs on widened operands (${kind} numerics, not ${kind} speed)`
    : `oneDNN unavailable (${st.note}); ${kind} GEMMs run as fp32 GEMMs on widened operands`);
}

// oneDNN 2.x implements 16-bit matmul only from avx512_core (dnnl_cpu_isa_t 0x27) up
// (bf16 emulated there, native with avx512_core_bf16 / AMX; f16 with AVX512-FP16): below
// it every primitive creation fails, whatever the shape. Deciding that once from the ISA
// skips the per-call primitive-cache lookup on AVX2 machines (0.6% of a gpt-tiny bf16
// step's profile there); from avx512_core up each shape is still asked.
const ISA_NEEDED: Record<Lowp, number> = { bfloat16: 0x27, float16: 0x27 };
const nativePossible = new Map<Lowp, boolean>();
function mayBeNative(kind: Lowp): boolean {
  let v = nativePossible.get(kind);
  if (v === undefined) {
    const isa = dnnlIsaBits();
    v = isa !== null && (isa & ISA_NEEDED[kind]) === ISA_NEEDED[kind];
    nativePossible.set(kind, v);
  }
  return v;
}

/** How many mixed-precision GEMMs ran natively in oneDNN and how many were widened to fp32 (and in how many panels). */
export function lowpGemmStats(): { native: number; widened: number; panels: number } {
  return { ...stats };
}

// Widening scratch is bounded: an operand larger than this many elements is widened one
// panel at a time (rows of op(A), or columns of op(B)) with one fp32 GEMM per panel, so
// the lm_head's gradient GEMMs (G is 2048 × 8192 in gpt-small) no longer keep two
// 64 MiB fp32 copies resident for the rest of the run. Splitting M or N keeps fp32
// accumulation over the whole K; OpenBLAS may order a panel's sums differently from the
// whole GEMM's, so results can move in the last bits, as with any change of GEMM shape.
let panelElements = 1 << 21;

/** Sets the widening panel budget (elements per operand panel); returns the previous one (tests). */
export function setWidenPanelElements(n: number): number {
  if (!(n >= 1) || !Number.isInteger(n)) throw new Error(`setWidenPanelElements: expected a positive integer, got ${n}`);
  const prev = panelElements;
  panelElements = n;
  return prev;
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
  const p = mayBeNative(kind) ? dnnlMatmul(kind, transA, transB, m, n, k, lda, ldb, ldc, alpha, beta) : null;
  if (p) {
    stats.native++;
    dnnlExec(p, aOff ? a.subarray(aOff) : a, bOff ? b.subarray(bOff) : b, cOff ? c.subarray(cOff) : c);
    return;
  }
  stats.widened++;
  widenedNotice(kind);
  const sizeA = m * k, sizeB = k * n;
  const splitA = sizeA > panelElements && sizeA >= sizeB, splitB = !splitA && sizeB > panelElements;
  // The operand that is not split is widened once, whole.
  if (!splitA) widenA(kind, transA, 0, m, k, a, aOff, lda);
  if (!splitB) widenB(kind, transB, 0, n, k, b, bOff, ldb);
  if (!splitA && !splitB) {
    gemm(transA, transB, m, n, k, alpha, scratchA, 0, transA ? m : k, scratchB, 0, transB ? k : n, beta, c, cOff, ldc);
    return;
  }
  const step = Math.max(16, Math.floor(panelElements / k));
  if (splitA) {
    for (let i0 = 0; i0 < m; i0 += step) {
      const mi = Math.min(step, m - i0);
      widenA(kind, transA, i0, mi, k, a, aOff, lda);
      stats.panels++;
      gemm(transA, transB, mi, n, k, alpha, scratchA, 0, transA ? mi : k, scratchB, 0, transB ? k : n, beta, c, cOff + i0 * ldc, ldc);
    }
  } else {
    for (let j0 = 0; j0 < n; j0 += step) {
      const nj = Math.min(step, n - j0);
      widenB(kind, transB, j0, nj, k, b, bOff, ldb);
      stats.panels++;
      gemm(transA, transB, m, nj, k, alpha, scratchA, 0, transA ? m : k, scratchB, 0, transB ? k : nj, beta, c, cOff + j0, ldc);
    }
  }
}

/** Rows i0 … i0+mi of op(A) (m × k) widened into scratchA, laid out as op(A)'s panel with ld = k (or mi when transposed). */
function widenA(kind: Lowp, transA: boolean, i0: number, mi: number, k: number, a: Uint16Array, aOff: number, lda: number): void {
  if (scratchA.length < mi * k) scratchA = new Float32Array(mi * k);
  // Not transposed: mi stored rows of k; transposed: A is stored k × m, the panel is k rows of mi columns.
  if (transA) from16(kind, k, mi, a, aOff + i0, lda, scratchA, 0, mi);
  else from16(kind, mi, k, a, aOff + i0 * lda, lda, scratchA, 0, k);
}

/** Columns j0 … j0+nj of op(B) (k × n) widened into scratchB (ld = nj, or k when transposed). */
function widenB(kind: Lowp, transB: boolean, j0: number, nj: number, k: number, b: Uint16Array, bOff: number, ldb: number): void {
  if (scratchB.length < nj * k) scratchB = new Float32Array(nj * k);
  if (transB) from16(kind, nj, k, b, bOff + j0 * ldb, ldb, scratchB, 0, k);
  else from16(kind, k, nj, b, bOff + j0, ldb, scratchB, 0, nj);
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
