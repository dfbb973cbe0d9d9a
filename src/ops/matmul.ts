// matmul and linear: every product goes to blas.gemm (OpenBLAS sgemm/dgemm), with
// strides turned into leading dimensions so transposed and sliced views are read in
// place, and batch dims flattened into the GEMM's M (or K) whenever the layout
// allows, so `x (B, T, C) @ W^T` is ONE GEMM forward and one per gradient backward.
// Backward uses beta = 1 to accumulate straight into the gradient buffers.
//
// The op records one node 'matmul' with inputs [a, b] or [a, b, bias]: the optional
// third input is a bias (N,) added to every output row (rows are filled with the
// bias first, then the GEMM runs with beta = 1), which is how linear() is one node.
import { empty, type Tensor } from '../core/tensor.js';
import { broadcastShapes, broadcastStrides, coalesce, contiguousStrides, numel, shapeStr } from '../core/layout.js';
import { gemm as gemmF } from '../backend/blas.js';
import { record } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { biasGrad, dense, fillRows, floatData, gradTarget, type F } from '../backend/nn-kernels.js';
import { gemmLowp, type Lowp } from '../backend/gemm-lowp.js';
import { gradOperandScale, lowpKind } from '../backend/precision.js';
import { castLowp, lowpOperand } from '../backend/lowp-tensor.js';

export interface MatmulOptions {
  /** Use a's last two dims transposed. */
  transA?: boolean;
  /** Use b's last two dims transposed. */
  transB?: boolean;
  /** (N,) added to every output row. */
  bias?: Tensor | null;
}

/** How BLAS reads the last two dims of a tensor: stored transposed or not, and the leading dimension. */
export interface MatLayout {
  phys: boolean;
  ld: number;
}

/** BLAS layout of a rows×cols matrix with strides (rs, cs), or null when it needs a copy. */
export function matLayout(rows: number, cols: number, rs: number, cs: number): MatLayout | null {
  if ((cs === 1 || cols <= 1) && (rows <= 1 || rs >= Math.max(1, cols))) return { phys: false, ld: rows <= 1 ? Math.max(1, cols) : rs };
  if ((rs === 1 || rows <= 1) && (cols <= 1 || cs >= Math.max(1, rows))) return { phys: true, ld: cols <= 1 ? Math.max(1, rows) : cs };
  return null;
}

interface Operand {
  t: Tensor;
  data: F;
  lay: MatLayout;
  rows: number;
  cols: number;
  bShape: number[];
  bStrides: number[];
  copied: boolean;
}

function operand(t0: Tensor): Operand {
  const nd = t0.ndim;
  let t = t0;
  let lay = matLayout(t.shape[nd - 2]!, t.shape[nd - 1]!, t.strides[nd - 2]!, t.strides[nd - 1]!);
  if (!lay) {
    t = dense(t0);
    lay = matLayout(t.shape[nd - 2]!, t.shape[nd - 1]!, t.strides[nd - 2]!, t.strides[nd - 1]!)!;
  }
  return {
    t, data: t.data as F, lay, rows: t.shape[nd - 2]!, cols: t.shape[nd - 1]!,
    bShape: t.shape.slice(0, -2), bStrides: t.strides.slice(0, -2), copied: t !== t0,
  };
}

function release(...ops: Operand[]): void {
  for (const o of ops) if (o.copied) o.t.dispose();
}

/** Leading dimension when batch dims and rows collapse into one row dim (not stored transposed), else null. */
function flatLd(o: Operand): number | null {
  if (o.lay.phys) return null;
  const c = coalesce([...o.bShape, o.rows], [[...o.bStrides, o.lay.ld]]);
  if (c.shape.length !== 1) return null;
  return c.shape[0]! <= 1 ? Math.max(1, o.cols) : c.strides[0]![0]!;
}

type Path = 'flatM' | 'flatK' | 'loop';

function plan(X: Operand, tx: boolean, Y: Operand, ty: boolean, zBatch: readonly number[], batch: readonly number[]): Path {
  const nb = numel(batch);
  if (nb === 1) return 'loop';
  if (!tx && numel(Y.bShape) === 1 && numel(zBatch) === nb && flatLd(X) !== null) return 'flatM';
  if (tx && !ty && numel(zBatch) === 1 && numel(X.bShape) === nb && numel(Y.bShape) === nb && flatLd(X) !== null && flatLd(Y) !== null) return 'flatK';
  return 'loop';
}

/**
 * Z[b] = alpha · op(X[b]) · op(Y[b]) + beta · Z[b] over the broadcast batch `batch`.
 * Z is contiguous with batch shape zBatch (broadcast into `batch`; with beta = 1 the
 * repeated slices accumulate, which is how broadcast inputs get summed gradients).
 */
function run(path: Path, X: Operand, tx: boolean, Y: Operand, ty: boolean, z: F, zBatch: readonly number[],
  batch: readonly number[], alpha: number, beta: number, kind: Lowp | null = null): void {
  // Mixed precision: X and Y hold 16-bit operands (Uint16Array), z is fp32.
  const gemm = kind ? lowpGemm(kind) : gemmF;
  const m = tx ? X.cols : X.rows, k = tx ? X.rows : X.cols, n = ty ? Y.rows : Y.cols;
  const ta = tx !== X.lay.phys, tb = ty !== Y.lay.phys;
  const nb = numel(batch);
  if (m === 0 || n === 0 || nb === 0) return;
  if (k === 0) {
    if (beta === 0) z.fill(0, 0, numel(zBatch) * m * n);
    return;
  }
  if (path === 'flatM') {
    gemm(false, tb, nb * m, n, k, alpha, X.data, X.t.offset, flatLd(X)!, Y.data, Y.t.offset, Y.lay.ld, beta, z, 0, n);
    return;
  }
  if (path === 'flatK') {
    gemm(true, false, m, n, nb * k, alpha, X.data, X.t.offset, flatLd(X)!, Y.data, Y.t.offset, flatLd(Y)!, beta, z, 0, n);
    return;
  }
  const xs = broadcastStrides(X.bShape, X.bStrides, batch);
  const ys = broadcastStrides(Y.bShape, Y.bStrides, batch);
  const zs = broadcastStrides(zBatch, contiguousStrides(zBatch).map((s) => s * m * n), batch);
  const nd = batch.length, idx = new Array<number>(nd).fill(0);
  let xo = X.t.offset, yo = Y.t.offset, zo = 0;
  for (let i = 0; i < nb; i++) {
    gemm(ta, tb, m, n, k, alpha, X.data, xo, X.lay.ld, Y.data, yo, Y.lay.ld, beta, z, zo, n);
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      xo += xs[d]!; yo += ys[d]!; zo += zs[d]!;
      if (idx[d]! < batch[d]!) break;
      xo -= xs[d]! * batch[d]!; yo -= ys[d]! * batch[d]!; zo -= zs[d]! * batch[d]!;
      idx[d] = 0;
    }
  }
}

type GemmFn = typeof gemmF;
const lowpGemms = new Map<Lowp, GemmFn>();
function lowpGemm(kind: Lowp): GemmFn {
  let g = lowpGemms.get(kind);
  if (!g) {
    g = (ta, tb, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc) =>
      gemmLowp(kind, ta, tb, m, n, k, alpha, a as unknown as Uint16Array, aOff, lda, b as unknown as Uint16Array, bOff, ldb, beta, c as Float32Array, cOff, ldc);
    lowpGemms.set(kind, g);
  }
  return g;
}

/** Mixed-precision matmul node context: the 16-bit type and the activation operands kept for backward. */
interface MatmulCtx {
  kind: Lowp;
  a16: Tensor | null;
  b16: Tensor | null;
}

function isParameter(t: Tensor): boolean {
  return t.isLeaf && t.requiresGrad;
}

function checkFloat(t: Tensor, what: string): void {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`matmul: ${what} must be float32 or float64, got ${t.dtype}`);
}

/**
 * a (..., M, K) @ b (..., K, N) → (..., M, N), batch dims broadcast (NumPy rules);
 * transA/transB use a's or b's last two dims transposed; bias (N,) is added to each row.
 * Inputs may be any strided views; copies happen only when the last two dims have
 * no unit stride.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = !!opts.transA, transB = !!opts.transB, bias = opts.bias ?? null;
  checkFloat(a, 'a');
  checkFloat(b, 'b');
  if (a.dtype !== b.dtype) throw new Error(`matmul: dtypes differ (a ${a.dtype}, b ${b.dtype})`);
  if (a.ndim < 2 || b.ndim < 2) throw new Error(`matmul: inputs need at least 2 dims, got a ${shapeStr(a.shape)} and b ${shapeStr(b.shape)} (reshape vectors to (1, n) or (n, 1))`);
  const ar = a.shape[a.ndim - 2]!, ac = a.shape[a.ndim - 1]!, br = b.shape[b.ndim - 2]!, bc = b.shape[b.ndim - 1]!;
  const M = transA ? ac : ar, K = transA ? ar : ac, Kb = transB ? bc : br, N = transB ? br : bc;
  if (K !== Kb) {
    throw new Error(`matmul: inner dims differ: a ${shapeStr(a.shape)}${transA ? '^T' : ''} has K=${K}, b ${shapeStr(b.shape)}${transB ? '^T' : ''} has K=${Kb}`);
  }
  if (bias) {
    if (bias.dtype !== a.dtype) throw new Error(`matmul: bias dtype ${bias.dtype} differs from ${a.dtype}`);
    if (bias.ndim !== 1 || bias.shape[0] !== N) throw new Error(`matmul: bias must have shape [${N}], got ${shapeStr(bias.shape)}`);
  }
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul batch dims');
  const out = empty([...batch, M, N], a.dtype);
  const od = out.data as F;
  let beta = 0;
  if (bias) {
    const bd = dense(bias);
    fillRows(od, floatData(bd), numel(batch) * M, N, N);
    if (bd !== bias) bd.dispose();
    beta = 1;
  }
  // train.precision bf16/fp16: 16-bit operands (parameters from the per-step copy), fp32
  // accumulation and output. The 16-bit copy of an activation operand is what backward
  // reads (a for dB, b for dA): it is kept on the node and the input is recorded as
  // packed, so the caller may release the fp32 activation (autograd/saved-pack.ts).
  // Parameters are not kept: backward takes them from the per-step copy again (ZeRO-3
  // must be able to drop a gathered parameter between forward and backward).
  const kind = a.dtype === 'float32' ? lowpKind() : null;
  if (kind) {
    const a16 = lowpOperand(a, kind), b16 = lowpOperand(b, kind);
    const A = operand(a16), B = operand(b16);
    run(plan(A, transA, B, transB, batch, batch), A, transA, B, transB, od, batch, batch, 1, beta, kind);
    const keepA = b.requiresGrad && !isParameter(a), keepB = a.requiresGrad && !isParameter(b);
    if (!keepA) a16.dispose();
    if (!keepB) b16.dispose();
    const ctx: MatmulCtx = { kind, a16: keepA ? a16 : null, b16: keepB ? b16 : null };
    const saved = [...(keepA ? [a16] : []), ...(keepB ? [b16] : [])];
    const packed = [2, ...(keepA || !b.requiresGrad ? [0] : []), ...(keepB || !a.requiresGrad ? [1] : [])];
    return record('matmul', { transA, transB }, bias ? [a, b, bias] : [a, b], out, saved, ctx, packed);
  }
  const A = operand(a), B = operand(b);
  run(plan(A, transA, B, transB, batch, batch), A, transA, B, transB, od, batch, batch, 1, beta);
  release(A, B);
  return record('matmul', { transA, transB }, bias ? [a, b, bias] : [a, b], out);
}

/** x (..., in) @ weight (out, in)^T + bias (out,) → (..., out); weight in PyTorch layout. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (weight.ndim !== 2) throw new Error(`linear: weight must be 2-D (out, in), got ${shapeStr(weight.shape)}`);
  if (x.ndim < 2) throw new Error(`linear: input must have at least 2 dims (N, in), got ${shapeStr(x.shape)}`);
  if (x.shape[x.ndim - 1] !== weight.shape[1]) {
    throw new Error(`linear: input ${shapeStr(x.shape)} does not end in in_features=${weight.shape[1]} of weight ${shapeStr(weight.shape)}`);
  }
  return matmul(x, weight, { transB: true, bias: bias ?? null });
}

/** Gradient rule of 'matmul': accumulates into a, b (GEMM beta = 1) and the bias (column sums). */
export function matmulBackward(node: Node<'matmul'>, gOut: Tensor): void {
  const { transA, transB } = node.attrs;
  const [a, b, bias] = node.inputs as [Tensor, Tensor, Tensor | undefined];
  const Gt = dense(gOut);
  const batch = Gt.shape.slice(0, -2);
  const M = Gt.shape[Gt.ndim - 2]!, N = Gt.shape[Gt.ndim - 1]!;
  // A 16-bit ctx means the forward ran in mixed precision: so do both gradient GEMMs, on
  // the same 16-bit operands (parameters: the step's copy; activations: recast) and the
  // output gradient cast to that type (times the fp16 loss scale, divided out by alpha).
  const mctx = (node.ctx as MatmulCtx | undefined) ?? null;
  const lowp = mctx?.kind ?? null;
  const gScale = lowp ? gradOperandScale() : 1;
  const G16 = lowp && (a.requiresGrad || b.requiresGrad) ? castLowp(Gt, lowp, gScale) : null;
  const G = operand(G16 ?? Gt);
  if (a.requiresGrad || b.requiresGrad) {
    // Kept 16-bit activation operands are views owned by node.saved (disposed after this rule).
    const a16 = lowp && b.requiresGrad ? (mctx!.a16 ? mctx!.a16.view(mctx!.a16.shape, mctx!.a16.strides, mctx!.a16.offset) : lowpOperand(a, lowp)) : null;
    const b16 = lowp && a.requiresGrad ? (mctx!.b16 ? mctx!.b16.view(mctx!.b16.shape, mctx!.b16.strides, mctx!.b16.offset) : lowpOperand(b, lowp)) : null;
    const A = operand(a16 ?? a), B = operand(b16 ?? b);
    if (a.requiresGrad) {
      // !transA: dA = G · op(B)^T ; transA: dA = op(B) · G^T
      const [X, tx, Y, ty] = transA ? [B, transB, G, true] : [G, false, B, !transB];
      accumulate(a, X, tx, Y, ty, batch, lowp, 1 / gScale);
    }
    if (b.requiresGrad) {
      // !transB: dB = op(A)^T · G ; transB: dB = G^T · op(A)
      const [X, tx, Y, ty] = transB ? [G, true, A, transA] : [A, !transA, G, false];
      accumulate(b, X, tx, Y, ty, batch, lowp, 1 / gScale);
    }
    release(A, B);
    a16?.dispose();
    b16?.dispose();
  }
  G16?.dispose();
  if (bias && bias.requiresGrad) {
    const { g } = gradTarget(bias, false);
    biasGrad(floatData(Gt), g.data as F, numel(batch) * M, N, N);
  }
  if (Gt !== gOut) Gt.dispose();
}

function accumulate(target: Tensor, X: Operand, tx: boolean, Y: Operand, ty: boolean, batch: number[], kind: Lowp | null = null, alpha = 1): void {
  const zBatch = target.shape.slice(0, -2);
  const path = plan(X, tx, Y, ty, zBatch, batch);
  const writesAll = path === 'flatK' || numel(zBatch) === numel(batch);
  const { g, fresh } = gradTarget(target, writesAll);
  run(path, X, tx, Y, ty, g.data as F, zBatch, batch, alpha, fresh ? 0 : 1, kind);
}
