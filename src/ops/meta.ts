// The meta device: the same ops, computing shapes only. When any tensor argument of an
// op is a meta tensor (shape-only, see core/tensor.ts metaTensor), the op returns a
// meta result with the shape, dtype and view structure the real op would produce,
// records it on the tape (with the tensors the real op saves for backward), and
// reports what the real op would cost (op class, FLOPs, bytes moved) to the active
// trace sink. src/plan/ runs the real model code through this to get parameter and
// activation shapes, so the planner never describes a model a second time.
//
// Each rule mirrors its op's output and saved tensors (src/ops/*.ts); an op without a
// rule fails on the meta device with the tensor's "no data" error, loudly.
import { Tensor, metaTensor } from '../core/tensor.js';
import type { DType } from '../core/dtype.js';
import { broadcastShapes, contiguousStrides, normAxis, numel, sameShape } from '../core/layout.js';
import { record, isGradEnabled } from '../autograd/tape.js';
import type { OpAttrs, OpName } from '../autograd/node.js';
import * as E from './elementwise.js';
import * as U from './unary.js';
import * as R from './reduce.js';
import * as S from './shape.js';
import * as M from './matmul.js';
import * as N from './nn.js';
import * as A from './attention.js';
import { lowpKind } from '../backend/precision.js';

/** What the planner prices an op as. */
export type OpClass = 'gemm' | 'attention' | 'elementwise' | 'norm' | 'softmax' | 'embedding' | 'copy' | 'view';

export interface MetaOpEvent {
  op: OpName;
  cls: OpClass;
  flops: number;
  bytes: number;
  inputs: readonly Tensor[];
  out: Tensor;
  saved: readonly Tensor[];
  /** GEMM (m, n, k) with the batch folded into m; attention (B·H, Tq, Tk, D). */
  dims?: number[];
  /**
   * Mixed precision (train.precision bf16/fp16, see backend/precision.ts): elements of the
   * 16-bit operand casts the real op makes and frees, in forward and in its backward, and
   * of every 16-bit GEMM operand (parameters' per-step copies included) the GEMMs read.
   */
  lowp?: { fwdCasts: number[]; bwdCasts: number[]; fwdOperands: number[]; bwdOperands: number[] };
}

/** Receives every meta op as it runs (set by src/plan/trace.ts). */
export interface MetaSink {
  op(e: MetaOpEvent): void;
  alloc(t: Tensor): void;
}

let sink: MetaSink | null = null;

export function setMetaSink(s: MetaSink | null): MetaSink | null {
  const prev = sink;
  sink = s;
  return prev;
}

export function isMeta(t: unknown): boolean {
  return t instanceof Tensor && t.box.meta === true;
}

const DSIZE: Record<DType, number> = { float32: 4, float64: 8, int32: 4, bfloat16: 2, float16: 2 } as Record<DType, number>;
export function dtypeBytes(d: DType): number {
  return DSIZE[d] ?? 4;
}

/** A fresh contiguous meta buffer (an allocation the real op would make). */
function alloc(shape: readonly number[], dtype: DType): Tensor {
  const t = metaTensor(shape, dtype);
  sink?.alloc(t);
  return t;
}

const nbytes = (t: Tensor): number => t.size * dtypeBytes(t.dtype);

/**
 * `packed`: the input indices (-1: the output) whose fp32 data the real op's backward does
 * not read, as the real op records them (autograd/saved-pack.ts), so releaseActivation
 * makes the same decision on meta tensors and the trace frees what the real step frees.
 */
function emit<K extends OpName>(op: K, cls: OpClass, flops: number, attrs: OpAttrs[K], inputs: Tensor[], out: Tensor, saved: Tensor[] = [], dims?: number[], lowp?: MetaOpEvent['lowp'], packed?: number[]): Tensor {
  const bytes = cls === 'view' ? 0 : inputs.reduce((s, t) => s + nbytes(t), 0) + nbytes(out);
  sink?.op({ op, cls, flops, bytes, inputs, out, saved, dims, lowp });
  return record(op, attrs, inputs, out, saved, undefined, packed);
}

/**
 * train.precision=bf16 with recording on: the ops whose fused forward kernel writes a bf16
 * copy of what backward reads (ops/nn.ts packsBf16, ops/gelu-lowp.ts geluPacks).
 */
function packsBf16(x: Tensor, ...needGrad: (Tensor | null)[]): boolean {
  return x.dtype === 'float32' && lowpKind() === 'bfloat16' && isGradEnabled() && needGrad.some((t) => t !== null && t.requiresGrad);
}

/** A parameter (leaf that trains), whose 16-bit copy is cached per step (backend/lowp-tensor.ts). */
const isParam = (t: Tensor): boolean => t.isLeaf && t.requiresGrad;
const anyMeta = (xs: readonly unknown[]): boolean => xs.some(isMeta);
const asTensor = (v: Tensor | number, like: Tensor): Tensor => (typeof v === 'number' ? metaTensor([], like.dtype) : v);
const NO = Object.freeze({}) as Record<string, never>;

// ---- rules (one per op; shapes and saved tensors as in the real op) ----

function binaryMeta(name: 'add' | 'sub' | 'mul' | 'div', a: Tensor, b: Tensor | number): Tensor {
  const bt = asTensor(b, a);
  const shape = bt.shape.length === 0 || sameShape(a.shape, bt.shape) ? a.shape : broadcastShapes(a.shape, bt.shape, name);
  const out = alloc(shape, a.dtype);
  return emit(name, 'elementwise', out.size, NO, [a, bt], out);
}

const UNARY_FLOPS: Record<string, number> = { gelu: 12, silu: 5, tanh: 8, sigmoid: 5, exp: 4, log: 4, pow: 4 };
function unaryMeta(name: 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'pow' | 'tanh' | 'sigmoid' | 'relu' | 'gelu' | 'silu' | 'scale', x: Tensor, attrs: OpAttrs[typeof name]): Tensor {
  const out = alloc(x.shape, x.dtype);
  if (name === 'gelu' && packsBf16(x, x)) {
    // gelu-lowp.ts: the fused kernel also writes bf16(x), which backward reads.
    const xh = alloc(x.shape, 'bfloat16');
    return emit(name, 'elementwise', out.size * (UNARY_FLOPS[name] ?? 1), attrs as never, [x], out, [xh], undefined, undefined, [0]);
  }
  return emit(name, 'elementwise', out.size * (UNARY_FLOPS[name] ?? 1), attrs as never, [x], out);
}

function matmulMeta(a: Tensor, b: Tensor, opts: M.MatmulOptions): Tensor {
  const transA = !!opts.transA, transB = !!opts.transB, bias = opts.bias ?? null;
  const ar = a.shape[a.ndim - 2]!, ac = a.shape[a.ndim - 1]!, br = b.shape[b.ndim - 2]!, bc = b.shape[b.ndim - 1]!;
  const m = transA ? ac : ar, k = transA ? ar : ac, kb = transB ? bc : br, n = transB ? br : bc;
  if (k !== kb) throw new Error(`matmul (meta): inner dims differ: ${k} vs ${kb}`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'matmul batch dims');
  const out = alloc([...batch, m, n], a.dtype);
  // Mixed precision as matmul.ts runs it: activations are cast to 16 bits for the GEMM;
  // the copy backward reads (a for dB, b for dA) is kept on the node and the fp32 input
  // recorded as packed, the others freed; parameters use the step's copy. Backward casts
  // the output gradient.
  const kind = a.dtype === 'float32' ? lowpKind() : null;
  const inputs = bias ? [a, b, bias] : [a, b];
  const flops = 2 * numel(batch) * m * n * k, dims = [numel(batch) * m, n, k];
  if (kind) {
    const acts = [a, b].filter((t) => !isParam(t)).map((t) => t.size);
    const a16 = isParam(a) ? null : alloc(a.shape, kind), b16 = isParam(b) ? null : alloc(b.shape, kind);
    const keepA = b.requiresGrad && !isParam(a), keepB = a.requiresGrad && !isParam(b);
    if (a16 && !keepA) a16.dispose();
    if (b16 && !keepB) b16.dispose();
    const saved = [...(keepA ? [a16!] : []), ...(keepB ? [b16!] : [])];
    const packed = [2, ...(keepA || !b.requiresGrad ? [0] : []), ...(keepB || !a.requiresGrad ? [1] : [])];
    const lowp = { fwdCasts: acts, bwdCasts: [out.size], fwdOperands: [a.size, b.size], bwdOperands: [out.size, a.size, out.size, b.size] };
    return emit('matmul', 'gemm', flops, { transA, transB }, inputs, out, saved, dims, lowp, packed);
  }
  return emit('matmul', 'gemm', flops, { transA, transB }, inputs, out, [], dims);
}

function attentionMeta(q: Tensor, k: Tensor, v: Tensor, opts: A.AttentionOptions): Tensor {
  const causal = opts.causal ?? true;
  const [B, H, Tq, D] = q.shape as [number, number, number, number];
  const Tk = k.shape[2]!, Dv = v.shape[3]!;
  // Mixed precision (attention.ts): Q, K, V cast to 16 bits for the GEMMs and kept on the
  // node for backward (the fp32 q, k, v recorded as packed); the probabilities are written
  // and saved in 16 bits. Backward casts the output gradient.
  const kind = q.dtype === 'float32' ? lowpKind() : null;
  const outSize = B * H * Tq * Dv;
  const lowp: MetaOpEvent['lowp'] = kind ? { fwdCasts: [q.size, k.size, v.size], bwdCasts: [outSize], fwdOperands: [q.size, k.size, B * H * Tq * Tk, v.size], bwdOperands: [q.size, k.size, v.size, q.size, B * H * Tq * Tk, B * H * Tq * Tk] } : undefined;
  const casts = kind ? [q, k, v].map((t) => alloc(t.shape, kind)) : [];
  const P = alloc([B * H, Tq, Tk], kind ?? q.dtype); // probabilities, saved for backward (not flash attention)
  const base = alloc([B, Tq, H, Dv], q.dtype);
  const out = base.view([B, H, Tq, Dv], [Tq * H * Dv, Dv, H * Dv, 1], 0);
  base.dispose();
  // Causal rows skip key blocks past the diagonal (128-row blocks, see attention.ts).
  const keys = causal ? Math.min(Tk, (Tq + 128) / 2) : Tk;
  const flops = 2 * B * H * Tq * keys * (D + Dv) + 5 * B * H * Tq * keys;
  return emit('attention', 'attention', flops, { causal, scale: opts.scale ?? 1 / Math.sqrt(D) }, [q, k, v], out, [P, ...casts], [B * H, Tq, Tk, D], lowp, kind ? [0, 1, 2] : undefined);
}

function softmaxMeta(op: 'softmax' | 'logSoftmax', x: Tensor, axis: number): Tensor {
  const ax = normAxis(axis, x.ndim, op);
  const out = alloc(x.shape, x.dtype);
  if (op === 'softmax' && ax === x.ndim - 1 && packsBf16(x, x)) {
    // ops/nn.ts: bf16(y) is all backward reads.
    const yh = alloc(x.shape, 'bfloat16');
    return emit(op, 'softmax', 5 * x.size, { axis: ax }, [x], out, [yh], undefined, undefined, [0, -1]);
  }
  return emit(op, 'softmax', 5 * x.size, { axis: ax }, [x], out);
}

function crossEntropyMeta(logits: Tensor, targets: Tensor, opts: N.CrossEntropyOptions): Tensor {
  const rows = numel(logits.shape.slice(0, -1));
  if (packsBf16(logits, logits)) {
    // ops/nn.ts: the fused kernel writes bf16(logits), which backward reads.
    const xd = logits.isContiguous() ? null : alloc(logits.shape, logits.dtype);
    const lse = alloc([rows], logits.dtype), out = alloc([], logits.dtype), lh = alloc(logits.shape, 'bfloat16');
    xd?.dispose();
    return emit('crossEntropy', 'softmax', 5 * logits.size, { ignoreIndex: opts.ignoreIndex ?? -100 }, [logits, targets], out, [lse, lh], undefined, undefined, [0, 1]);
  }
  const lse = alloc([rows], logits.dtype);
  const out = alloc([], logits.dtype);
  const saved = logits.isContiguous() ? [lse] : [lse, alloc(logits.shape, logits.dtype)];
  return emit('crossEntropy', 'softmax', 5 * logits.size, { ignoreIndex: opts.ignoreIndex ?? -100 }, [logits, targets], out, saved);
}

function normMeta(op: 'layerNorm' | 'rmsNorm', x: Tensor, weight: Tensor, bias: Tensor | null, eps: number): Tensor {
  const rows = x.size / x.shape[x.ndim - 1]!;
  const out = alloc(x.shape, x.dtype);
  const saved = op === 'layerNorm' ? [alloc([rows], x.dtype), alloc([rows], x.dtype)] : [alloc([rows], x.dtype)];
  const inputs = bias ? [x, weight, bias] : [x, weight];
  if (op === 'layerNorm' && packsBf16(x, x, weight, bias)) {
    // ops/nn.ts: the fused kernel also writes bf16(x), which backward reads.
    saved.push(alloc(x.shape, 'bfloat16'));
    return emit(op, 'norm', 8 * x.size, { eps }, inputs, out, saved, undefined, undefined, [0]);
  }
  return emit(op, 'norm', 8 * x.size, { eps }, inputs, out, saved);
}

function embeddingMeta(weight: Tensor, idx: Tensor): Tensor {
  const out = alloc([...idx.shape, weight.shape[1]!], weight.dtype);
  return emit('embedding', 'embedding', 0, NO, [weight, idx], out);
}

function dropoutMeta(x: Tensor, p: number, opts: N.DropoutOptions): Tensor {
  if (p === 0 || opts.training === false) return x;
  opts.rng?.nextU32(); // keep the generator's sequence as the real op does
  const out = alloc(x.shape, x.dtype);
  const mask = alloc([Math.ceil(x.size / 32)], 'int32');
  return emit('dropout', 'elementwise', 2 * x.size, { p }, [x], out, [mask]);
}

function reduceMeta(op: 'sum' | 'mean', x: Tensor, axes: number | readonly number[] | undefined, keepDims: boolean): Tensor {
  const ax = R.normAxes(axes, x.ndim, op);
  const shape = keepDims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
  const out = alloc(shape, x.dtype);
  return emit(op, 'elementwise', x.size, { axes: ax, keepDims }, [x], out);
}

function maxMeta(x: Tensor, axis: number, keepDims: boolean): Tensor {
  const a = normAxis(axis, x.ndim, 'max');
  const shape = keepDims ? x.shape.map((d, i) => (i === a ? 1 : d)) : x.shape.filter((_, i) => i !== a);
  const out = alloc(shape, x.dtype);
  return emit('max', 'elementwise', x.size, { axis: a, keepDims }, [x], out, [alloc(shape, 'int32')]);
}

function reshapeMeta(x: Tensor, shape: readonly number[]): Tensor {
  const sh = S.resolveShape(shape, x.size, 'reshape');
  if (x.isContiguous()) return emit('reshape', 'view', 0, { shape: sh }, [x], x.view(sh, contiguousStrides(sh), x.offset));
  return emit('reshape', 'copy', 0, { shape: sh }, [x], alloc(sh, x.dtype));
}

function contiguousMeta(x: Tensor): Tensor {
  if (x.isContiguous()) return x;
  return emit('contiguous', 'copy', 0, NO, [x], alloc(x.shape, x.dtype));
}

function concatMeta(xs: readonly Tensor[], axis: number): Tensor {
  const a = normAxis(axis, xs[0]!.ndim, 'concat');
  const sh = [...xs[0]!.shape];
  sh[a] = xs.reduce((s, x) => s + x.shape[a]!, 0);
  return emit('concat', 'copy', 0, { axis: a }, [...xs], alloc(sh, xs[0]!.dtype));
}

function gatherMeta(x: Tensor, index: Tensor, axis: number): Tensor {
  return emit('gather', 'copy', 0, { axis: normAxis(axis, x.ndim, 'gather') }, [x, index], alloc(index.shape, x.dtype));
}

function whereMeta(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const like = typeof a !== 'number' ? a : typeof b !== 'number' ? b : cond;
  const at = asTensor(a, like), bt = asTensor(b, like);
  const out = alloc(broadcastShapes(broadcastShapes(cond.shape, at.shape, 'where'), bt.shape, 'where'), like.dtype);
  return emit('where', 'elementwise', out.size, NO, [cond, at, bt], out);
}

function castMeta(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  return emit('cast', 'elementwise', x.size, { to: dtype }, [x], alloc(x.shape, dtype));
}

// ---- the exported ops: meta when any argument is meta, else the real op ----

const un = <K extends 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'sigmoid' | 'relu' | 'gelu' | 'silu'>(k: K, real: (x: Tensor) => Tensor) =>
  (x: Tensor): Tensor => (isMeta(x) ? unaryMeta(k, x, NO) : real(x));
const bin = (k: 'add' | 'sub' | 'mul' | 'div', real: (a: Tensor, b: Tensor | number) => Tensor) =>
  (a: Tensor, b: Tensor | number): Tensor => (isMeta(a) || isMeta(b) ? binaryMeta(k, a, b) : real(a, b));

export const add = bin('add', E.add);
export const sub = bin('sub', E.sub);
export const mul = bin('mul', E.mul);
export const div = bin('div', E.div);
export const neg = un('neg', U.neg);
export const exp = un('exp', U.exp);
export const log = un('log', U.log);
export const sqrt = un('sqrt', U.sqrt);
export const rsqrt = un('rsqrt', U.rsqrt);
export const tanh = un('tanh', U.tanh);
export const sigmoid = un('sigmoid', U.sigmoid);
export const relu = un('relu', U.relu);
export const gelu = un('gelu', U.gelu);
export const silu = un('silu', U.silu);
export function pow(x: Tensor, exponent: number): Tensor { return isMeta(x) ? unaryMeta('pow', x, { exponent }) : U.pow(x, exponent); }
export function scale(x: Tensor, factor: number): Tensor { return isMeta(x) ? unaryMeta('scale', x, { factor }) : U.scale(x, factor); }
export function cast(x: Tensor, dtype: DType): Tensor { return isMeta(x) ? castMeta(x, dtype) : U.cast(x, dtype); }
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  return anyMeta([cond, a, b]) ? whereMeta(cond, a, b) : E.where(cond, a, b);
}
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return isMeta(x) ? reduceMeta('sum', x, axes, keepDims) : R.sum(x, axes, keepDims);
}
export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  return isMeta(x) ? reduceMeta('mean', x, axes, keepDims) : R.mean(x, axes, keepDims);
}
export function max(x: Tensor, axis: number, keepDims = false): Tensor {
  return isMeta(x) ? maxMeta(x, axis, keepDims) : R.max(x, axis, keepDims);
}
export function reshape(x: Tensor, shape: readonly number[]): Tensor { return isMeta(x) ? reshapeMeta(x, shape) : S.reshape(x, shape); }
export function contiguous(x: Tensor): Tensor { return isMeta(x) ? contiguousMeta(x) : S.contiguous(x); }
export function concat(xs: readonly Tensor[], axis = 0): Tensor { return anyMeta(xs) ? concatMeta(xs, axis) : S.concat(xs, axis); }
export function gather(x: Tensor, index: Tensor, axis: number): Tensor { return anyMeta([x, index]) ? gatherMeta(x, index, axis) : S.gather(x, index, axis); }
export function matmul(a: Tensor, b: Tensor, opts: M.MatmulOptions = {}): Tensor {
  return anyMeta([a, b, opts.bias]) ? matmulMeta(a, b, opts) : M.matmul(a, b, opts);
}
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return anyMeta([x, weight, bias]) ? matmulMeta(x, weight, { transB: true, bias: bias ?? null }) : M.linear(x, weight, bias);
}
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: A.AttentionOptions = {}): Tensor {
  return anyMeta([q, k, v]) ? attentionMeta(q, k, v, opts) : A.attention(q, k, v, opts);
}
export function softmax(x: Tensor, axis = -1): Tensor { return isMeta(x) ? softmaxMeta('softmax', x, axis) : N.softmax(x, axis); }
export function logSoftmax(x: Tensor, axis = -1): Tensor { return isMeta(x) ? softmaxMeta('logSoftmax', x, axis) : N.logSoftmax(x, axis); }
export function crossEntropy(logits: Tensor, targets: Tensor, opts: N.CrossEntropyOptions = {}): Tensor {
  return anyMeta([logits, targets]) ? crossEntropyMeta(logits, targets, opts) : N.crossEntropy(logits, targets, opts);
}
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps = 1e-5): Tensor {
  return anyMeta([x, weight, bias]) ? normMeta('layerNorm', x, weight, bias, eps) : N.layerNorm(x, weight, bias, eps);
}
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-5): Tensor {
  return anyMeta([x, weight]) ? normMeta('rmsNorm', x, weight, null, eps) : N.rmsNorm(x, weight, eps);
}
export function embedding(weight: Tensor, idx: Tensor): Tensor { return anyMeta([weight, idx]) ? embeddingMeta(weight, idx) : N.embedding(weight, idx); }
export function dropout(x: Tensor, p: number, opts: N.DropoutOptions = {}): Tensor { return isMeta(x) ? dropoutMeta(x, p, opts) : N.dropout(x, p, opts); }

// ---- mixture-of-experts ops (ops/moe.ts): called by the MoE layer's meta branch
// (nn/moe-meta.ts), which routes by the balanced-load assumption, so `counts` is known
// without router probabilities. Shapes and saved tensors as in the real ops.

/** moeDispatch: S rows of x (N, C) gathered in expert order → (S, C); a row copy. */
export function moeDispatchMeta(x: Tensor, rows: number): Tensor {
  const out = alloc([rows, x.shape[1]!], x.dtype);
  return emit('moeDispatch', 'embedding', 0, {}, [x], out);
}

/**
 * groupedMatmul: one GEMM per expert over its block of rows. FLOPs are the sum; `dims`
 * is the mean block's GEMM (m = S / G rows, fractional when experts outnumber rows), the
 * shape the planner prices at (under expert parallelism it scales m by ep).
 */
export function groupedMatmulMeta(x: Tensor, w: Tensor, bias: Tensor | null, counts: Int32Array): Tensor {
  const [S, Cin] = x.shape as [number, number];
  const [G, Cout, Cin2] = w.shape as [number, number, number];
  if (Cin2 !== Cin || counts.length !== G) throw new Error(`groupedMatmul (meta): weight (${G}, ${Cout}, ${Cin2}) and ${counts.length} counts do not fit x (${S}, ${Cin})`);
  const total = counts.reduce((a, c) => a + c, 0);
  if (total !== S) throw new Error(`groupedMatmul (meta): group counts sum to ${total} but x has ${S} rows`);
  const out = alloc([S, Cout], x.dtype);
  return emit('groupedMatmul', 'gemm', 2 * S * Cout * Cin, {}, bias ? [x, w, bias] : [x, w], out, [], [S / G, Cout, Cin]);
}

/** moeCombine: each token's K expert rows weighted by its gates → (N, C). */
export function moeCombineMeta(y: Tensor, gate: Tensor): Tensor {
  const [N, K] = gate.shape as [number, number];
  const out = alloc([N, y.shape[1]!], y.dtype);
  return emit('moeCombine', 'elementwise', 2 * N * K * y.shape[1]!, {}, [y, gate], out);
}

/** dotInteraction (ops/dot-interaction.ts): x (B, D) and e (F, B, D) → (B, D + M(M-1)/2), M = F + 1. */
export function dotInteractionMeta(x: Tensor, e: Tensor): Tensor {
  const [B, D] = x.shape as [number, number];
  const M = e.shape[0]! + 1, P = (M * (M - 1)) / 2;
  const out = alloc([B, D + P], x.dtype);
  return emit('dotInteraction', 'elementwise', 2 * B * P * D, NO, [x, e], out);
}
