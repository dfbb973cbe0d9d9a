// Scaled dot-product attention, composed on GEMM:
//   S = scale · Q Kᵀ (OpenBLAS)  →  P = softmax(S) with the causal mask (one fused C
//   kernel, in place)  →  O = P V (OpenBLAS); P is saved for backward, which is
//   dV = Pᵀ dO, dP = dO Vᵀ (GEMMs), dS = scale · P ∘ (dP − rowsum(dP ∘ P)) (one fused
//   kernel, in place), dQ = dS K, dK = dSᵀ Q (GEMMs, beta = 1 into the gradients).
//
// Why not a flash-attention kernel: on CPUs the attention matrix of a (B, H) pair at
// training lengths (T ≤ 2048: ≤ 16 MB, usually ~256 KB) sits in L2/L3, so the HBM
// traffic a flash kernel exists to avoid is not the bottleneck; the flops are, and
// OpenBLAS's hand-tuned micro-kernels deliver several times what a portable fused C
// loop can. So the flops go to GEMM and only the memory-bound part (mask + softmax,
// and its backward) is a fused kernel, run per (b, h) right after the GEMM that
// produced S while it is still in cache. With the causal mask, rows are processed in
// blocks of ATTN_BLOCK and each block's GEMMs stop at the last unmasked column, so
// about half of QKᵀ, PV and their gradients is never computed.
//
// Layout: q, k, v may be any strided views whose last dim is unit-stride (or whose
// (T, D) plane is transposed), e.g. the (B, T, H, D)-strided views of a split qkv
// projection: the per-(b, h) matrices are passed to GEMM with ld = 3C, no copy.
// The output is stored as (B, T, H, D) and returned as its (B, H, T, D) permuted
// view, so the caller's "transpose back to (B, T, C)" is a free reshape.
import { empty, type Tensor } from '../core/tensor.js';
import { shapeStr } from '../core/layout.js';
import { gemm as gemmF } from '../backend/blas.js';
import { attnSoftmax16, attnSoftmaxBwd16, gemmLowp, to16, type Lowp } from '../backend/gemm-lowp.js';
import { gradOperandScale, lowpKind } from '../backend/precision.js';
import { castLowp } from '../backend/lowp-tensor.js';
import { record } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { attnSoftmax, attnSoftmaxBwd, dense, gradTarget, type F } from '../backend/nn-kernels.js';
import { matLayout, type MatLayout } from './matmul.js';

export interface AttentionOptions {
  /** Mask keys after the query position (j > i, top-left aligned like PyTorch's is_causal). Default true. */
  causal?: boolean;
  /** Multiplies QKᵀ; default 1/sqrt(D). */
  scale?: number;
}

const ATTN_BLOCK = 128;

/** Mixed-precision attention node context: the 16-bit type and the 16-bit Q, K, V kept for backward. */
interface AttnCtx {
  kind: Lowp;
  q16: Tensor;
  k16: Tensor;
  v16: Tensor;
}

type GemmFn = typeof gemmF;
type Arr = F | Uint16Array;

/** fp32 GEMM, or for mixed precision the 16-bit-operand GEMM (fp32 accumulate and output). */
function gemmFor(kind: Lowp | null): GemmFn {
  if (!kind) return gemmF;
  return (ta, tb, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc) =>
    gemmLowp(kind, ta, tb, m, n, k, alpha, a as unknown as Uint16Array, aOff, lda, b as unknown as Uint16Array, bOff, ldb, beta, c as Float32Array, cOff, ldc);
}

interface Mats {
  t: Tensor;
  data: F;
  lay: MatLayout;
  /** Offset of the (b, h) matrix. */
  at: (b: number, h: number) => number;
  copied: boolean;
}

function mats(t0: Tensor): Mats {
  let t = t0;
  let lay = matLayout(t.shape[2]!, t.shape[3]!, t.strides[2]!, t.strides[3]!);
  if (!lay) {
    t = dense(t0);
    lay = matLayout(t.shape[2]!, t.shape[3]!, t.strides[2]!, t.strides[3]!)!;
  }
  const s0 = t.strides[0]!, s1 = t.strides[1]!, off = t.offset;
  return { t, data: t.data as F, lay, at: (b, h) => off + b * s0 + h * s1, copied: t !== t0 };
}

function release(...ms: Mats[]): void {
  for (const m of ms) if (m.copied) m.t.dispose();
}

/** Row blocks [i0, i1) and the number of key columns each needs. */
function rowBlocks(Tq: number, Tk: number, causal: boolean): [number, number, number][] {
  if (!causal || Tq <= ATTN_BLOCK) return [[0, Tq, causal ? Math.min(Tq, Tk) : Tk]];
  const out: [number, number, number][] = [];
  for (let i0 = 0; i0 < Tq; i0 += ATTN_BLOCK) {
    const i1 = Math.min(Tq, i0 + ATTN_BLOCK);
    out.push([i0, i1, Math.min(i1, Tk)]);
  }
  return out;
}

/**
 * softmax(q kᵀ · scale (+ causal mask)) v for q (B, H, Tq, D), k (B, H, Tk, D),
 * v (B, H, Tk, Dv) → (B, H, Tq, Dv).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const causal = opts.causal ?? true;
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.ndim !== 4) throw new Error(`attention: ${name} must be (B, H, T, D), got ${shapeStr(t.shape)}`);
    if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`attention: ${name} must be float32 or float64, got ${t.dtype}`);
    if (t.dtype !== q.dtype) throw new Error(`attention: ${name} dtype ${t.dtype} differs from q dtype ${q.dtype}`);
  }
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  const Tk = k.shape[2]!, Dv = v.shape[3]!;
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D) throw new Error(`attention: k ${shapeStr(k.shape)} does not match q ${shapeStr(q.shape)} (expected [${B}, ${H}, Tk, ${D}])`);
  if (v.shape[0] !== B || v.shape[1] !== H || v.shape[2] !== Tk) throw new Error(`attention: v ${shapeStr(v.shape)} does not match k ${shapeStr(k.shape)} (expected [${B}, ${H}, ${Tk}, Dv])`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  // Mixed precision (train.precision bf16/fp16): Q, K, V and P enter the GEMMs as 16-bit
  // copies; scores, softmax math and the output stay fp32. The softmax kernel writes P in
  // 16 bits directly (no fp32 P is kept) and that is what backward gets; Q, K, V (alive in
  // fp32 as autograd inputs) are recast in backward rather than kept twice.
  const kind = q.dtype === 'float32' ? lowpKind() : null;
  const gemm = gemmFor(kind);
  const q16 = kind ? castLowp(q, kind) : null, k16 = kind ? castLowp(k, kind) : null, v16 = kind ? castLowp(v, kind) : null;
  const Q = mats(q16 ?? q), Km = mats(k16 ?? k), Vm = mats(v16 ?? v);
  const Sbuf = kind ? new Float32Array(Tq * Tk) : null;
  const P = empty([B * H, Tq, Tk], kind ?? q.dtype);
  const pd = P.data as F;
  const base = empty([B, Tq, H, Dv], q.dtype);
  const od = base.data as F;
  const ldo = H * Dv, blocks = rowBlocks(Tq, Tk, causal);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const po = (b * H + h) * Tq * Tk, oo = b * Tq * ldo + h * Dv;
      const qo = Q.at(b, h), ko = Km.at(b, h), vo = Vm.at(b, h);
      const S = Sbuf ?? pd.subarray(po, po + Tq * Tk);
      for (const [i0, i1, jn] of blocks) {
        gemm(Q.lay.phys, !Km.lay.phys, i1 - i0, jn, D, scale, Q.data, qo + i0 * (Q.lay.phys ? 1 : Q.lay.ld), Q.lay.ld,
          Km.data, ko, Km.lay.ld, 0, S, i0 * Tk, Tk);
      }
      const P16 = kind ? (pd as unknown as Uint16Array).subarray(po, po + Tq * Tk) : null;
      if (P16) attnSoftmax16(Sbuf!, P16, 1, Tq, Tk, 1, causal, kind!);
      else attnSoftmax(S, 1, Tq, Tk, 1, causal);
      const Pa: Arr = P16 ?? S;
      for (const [i0, i1, jn] of blocks) {
        if (jn === 0) { for (let i = i0; i < i1; i++) od.fill(0, oo + i * ldo, oo + i * ldo + Dv); continue; }
        gemm(false, Vm.lay.phys, i1 - i0, Dv, jn, 1, Pa as F, i0 * Tk, Tk, Vm.data, vo, Vm.lay.ld, 0, od, oo + i0 * ldo, ldo);
      }
    }
  }
  if (!kind) release(Q, Km, Vm);
  const out = base.view([B, H, Tq, Dv], [Tq * ldo, Dv, ldo, 1], 0);
  base.dispose();
  if (!kind) return record('attention', { causal, scale }, [q, k, v], out, [P]);
  // The 16-bit Q, K, V made for the GEMMs are what backward reads: kept on the node, so
  // the fp32 q, k, v (views of the qkv projection) may be released by the caller.
  const ctx: AttnCtx = { kind, q16: q16!, k16: k16!, v16: v16! };
  return record('attention', { causal, scale }, [q, k, v], out, [P, q16!, k16!, v16!], ctx, [0, 1, 2]);
}

/** Offset of row i in a matrix with layout `lay` (rows are strided by ld, or by 1 when stored transposed). */
function rowOff(lay: MatLayout, i: number): number {
  return lay.phys ? i : i * lay.ld;
}

export function attentionBackward(node: Node<'attention'>, gOut: Tensor): void {
  const [q, k, v] = node.inputs as [Tensor, Tensor, Tensor];
  if (!q.requiresGrad && !k.requiresGrad && !v.requiresGrad) return;
  const { causal, scale } = node.attrs;
  const P = node.saved[0]!;
  const pd = P.data as F;
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  const Tk = k.shape[2]!, Dv = v.shape[3]!;
  // A 16-bit ctx: the forward ran in mixed precision (P saved in 16 bits), so do the
  // gradient GEMMs on recast Q, K, V; dO and dS enter them as 16-bit (times the fp16 loss
  // scale, divided out by alpha).
  const actx = (node.ctx as AttnCtx | undefined) ?? null;
  const kind = actx?.kind ?? null;
  const gemm = gemmFor(kind);
  const gs = kind ? gradOperandScale() : 1, ga = 1 / gs;
  const g16 = kind ? castLowp(gOut, kind, gs) : null;
  // Owned by node.saved (disposed after this rule).
  const q16 = actx?.q16 ?? null, k16 = actx?.k16 ?? null, v16 = actx?.v16 ?? null;
  const Q = mats(q16 ?? q), Km = mats(k16 ?? k), Vm = mats(v16 ?? v), G = mats(g16 ?? gOut);
  const dS16 = kind ? new Uint16Array(Tq * Tk) : null;
  // Fresh (uninitialised) gradient buffers are written with beta = 0 by the first GEMM
  // that covers each element; not when two inputs are one tensor (their writes interleave).
  const distinct = q !== k && k !== v && q !== v;
  const tq = q.requiresGrad ? gradTarget(q, distinct) : null;
  const tk = k.requiresGrad ? gradTarget(k, distinct) : null;
  const tv = v.requiresGrad ? gradTarget(v, distinct) : null;
  const dq = tq?.g.data as F | undefined, dk = tk?.g.data as F | undefined, dv = tv?.g.data as F | undefined;
  const bq = tq?.fresh ? 0 : 1, bk = tk?.fresh ? 0 : 1, bv = tv?.fresh ? 0 : 1;
  const dP = (q.dtype === 'float32' ? new Float32Array(Tq * Tk) : new Float64Array(Tq * Tk)) as F;
  const blocks = rowBlocks(Tq, Tk, causal);
  const gl = G.lay, ql = Q.lay, kl = Km.lay, vl = Vm.lay;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const bh = b * H + h, po = bh * Tq * Tk;
      const S = pd.subarray(po, po + Tq * Tk);
      const go = G.at(b, h), qo = Q.at(b, h), ko = Km.at(b, h), vo = Vm.at(b, h);
      const dqo = bh * Tq * D, dko = bh * Tk * D, dvo = bh * Tk * Dv;
      const Pa = S; // 16-bit P in mixed precision (saved by forward), else fp32
      // Column blocks of P for dV and dK: keys [j0, j1) are seen only by queries i >= j0.
      if (dv) {
        if (causal && blocks.length > 1) {
          for (let j0 = 0; j0 < Tk; j0 += ATTN_BLOCK) {
            const j1 = Math.min(Tk, j0 + ATTN_BLOCK);
            if (j0 >= Tq) { if (bv === 0) dv.fill(0, dvo + j0 * Dv, dvo + j1 * Dv); continue; }
            gemm(true, gl.phys, j1 - j0, Dv, Tq - j0, ga, Pa, j0 * Tk + j0, Tk, G.data, go + rowOff(gl, j0), gl.ld, bv, dv, dvo + j0 * Dv, Dv);
          }
        } else {
          gemm(true, gl.phys, Tk, Dv, Tq, ga, Pa, 0, Tk, G.data, go, gl.ld, bv, dv, dvo, Dv);
        }
      }
      if (!dq && !dk) continue;
      for (const [i0, i1, jn] of blocks) {
        if (jn === 0) { dP.fill(0, i0 * Tk, i1 * Tk); continue; }
        gemm(gl.phys, !vl.phys, i1 - i0, jn, Dv, ga, G.data, go + rowOff(gl, i0), gl.ld, Vm.data, vo, vl.ld, 0, dP, i0 * Tk, Tk);
      }
      if (kind) attnSoftmaxBwd16(S as unknown as Uint16Array, dP as Float32Array, 1, Tq, Tk, scale, causal, kind);
      else attnSoftmaxBwd(S, dP, 1, Tq, Tk, scale, causal);
      if (dS16) to16(kind!, 1, Tq * Tk, dP as Float32Array, 0, Tq * Tk, dS16, 0, Tq * Tk, gs);
      const dSa = (dS16 ?? dP) as F;
      if (dq) {
        for (const [i0, i1, jn] of blocks) {
          if (jn === 0) { if (bq === 0) dq.fill(0, dqo + i0 * D, dqo + i1 * D); continue; }
          gemm(false, kl.phys, i1 - i0, D, jn, ga, dSa, i0 * Tk, Tk, Km.data, ko, kl.ld, bq, dq, dqo + i0 * D, D);
        }
      }
      if (dk) {
        if (causal && blocks.length > 1) {
          for (let j0 = 0; j0 < Tk; j0 += ATTN_BLOCK) {
            const j1 = Math.min(Tk, j0 + ATTN_BLOCK);
            if (j0 >= Tq) { if (bk === 0) dk.fill(0, dko + j0 * D, dko + j1 * D); continue; }
            gemm(true, ql.phys, j1 - j0, D, Tq - j0, ga, dSa, j0 * Tk + j0, Tk, Q.data, qo + rowOff(ql, j0), ql.ld, bk, dk, dko + j0 * D, D);
          }
        } else {
          gemm(true, ql.phys, Tk, D, Tq, ga, dSa, 0, Tk, Q.data, qo, ql.ld, bk, dk, dko, D);
        }
      }
    }
  }
  if (kind) g16!.dispose();
  else release(Q, Km, Vm, G);
}
