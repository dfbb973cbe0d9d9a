// Neural-network ops: softmax, logSoftmax, crossEntropy, layerNorm, rmsNorm,
// embedding, dropout. Each forward is one fused kernel (native/nn.c for float32,
// src/backend/reference/nn.ts otherwise) that saves what its backward needs
// (probabilities, log-sum-exp, mean/rstd, a bit mask); each backward is one fused
// kernel accumulating into the input gradients. Gradient buffers that do not exist
// yet are overwritten instead of zero-filled then accumulated (one memory pass less).
import { empty, type Tensor } from '../core/tensor.js';
import { contiguousStrides, normAxis, numel, sameShape, shapeStr } from '../core/layout.js';
import { globalRng, type Rng } from '../core/rng.js';
import { record } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import * as K from '../backend/nn-kernels.js';
import { copyStrided, dense, floatData, gradTarget, int32Data, type F } from '../backend/nn-kernels.js';
import * as L from '../backend/nn-lowp-kernels.js';
import { lowpKind } from '../backend/precision.js';
import { isGradEnabled } from '../autograd/tape.js';

// train.precision=bf16: whether an op whose backward reads `x` keeps a bf16 copy of it
// (written by the fused forward kernel) instead, so the fp32 activation can be released
// after the forward (autograd/saved-pack.ts). Backward then reads the copy in fp32 math.
function packsBf16(x: Tensor, ...needGrad: (Tensor | null)[]): boolean {
  return x.dtype === 'float32' && lowpKind() === 'bfloat16' && isGradEnabled() && needGrad.some((t) => t !== null && t.requiresGrad);
}

function checkFloat(t: Tensor, where: string, what = 'input'): void {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`${where}: ${what} must be float32 or float64, got ${t.dtype}`);
}

function checkParam(p: Tensor, x: Tensor, C: number, where: string, what: string): void {
  if (p.dtype !== x.dtype) throw new Error(`${where}: ${what} dtype ${p.dtype} differs from input dtype ${x.dtype}`);
  if (p.ndim !== 1 || p.shape[0] !== C) throw new Error(`${where}: ${what} must have shape [${C}] (the input's last dim), got ${shapeStr(p.shape)}`);
}

// ---------------------------------------------------------------- softmax

/** Dim order that moves `axis` last. */
function axisLastPerm(nd: number, axis: number): number[] {
  const p: number[] = [];
  for (let i = 0; i < nd; i++) if (i !== axis) p.push(i);
  p.push(axis);
  return p;
}

/** Contiguous copy of `t` with `axis` moved last (a plain Float*Array). */
function gatherAxisLast(t: Tensor, axis: number): F {
  const perm = axisLastPerm(t.ndim, axis);
  const out = t.dtype === 'float32' ? new Float32Array(t.size) : new Float64Array(t.size);
  copyStrided(t.data, t.offset, perm.map((d) => t.shape[d]!), perm.map((d) => t.strides[d]!), out);
  return out;
}

/** dst (contiguous, logical shape `shape`) at positions of the axis-last order gets src ("=" or "+="). */
function scatterAxisLast(src: F, dst: F, shape: readonly number[], axis: number, add: boolean): void {
  const perm = axisLastPerm(shape.length, axis);
  const cs = contiguousStrides(shape);
  const pShape = perm.map((d) => shape[d]!), pStrides = perm.map((d) => cs[d]!);
  const idx = new Array<number>(pShape.length).fill(0);
  const n = src.length;
  let off = 0;
  for (let i = 0; i < n; i++) {
    if (add) dst[off]! += src[i]!;
    else dst[off] = src[i]!;
    for (let d = pShape.length - 1; d >= 0; d--) {
      idx[d]!++;
      off += pStrides[d]!;
      if (idx[d]! < pShape[d]!) break;
      off -= pStrides[d]! * pShape[d]!;
      idx[d] = 0;
    }
  }
}

function softmaxForward(op: 'softmax' | 'logSoftmax', x: Tensor, axis: number): Tensor {
  checkFloat(x, op);
  if (x.ndim === 0) throw new Error(`${op}: input must have at least 1 dim`);
  const ax = normAxis(axis, x.ndim, op);
  const cols = x.shape[ax]!, rows = cols === 0 ? 0 : x.size / cols;
  const kern = op === 'softmax' ? K.softmaxFwd : K.logSoftmaxFwd;
  const out = empty(x.shape, x.dtype);
  if (op === 'softmax' && ax === x.ndim - 1 && packsBf16(x, x)) {
    const xd = dense(x), yh = empty(x.shape, 'bfloat16');
    L.softmaxFwdBf16Pack(floatData(xd) as Float32Array, out.data as Float32Array, yh.data as Uint16Array, rows, cols);
    if (xd !== x) xd.dispose();
    return record(op, { axis: ax }, [x], out, [yh], yh, [0, -1]);
  }
  if (ax === x.ndim - 1) {
    const xd = dense(x);
    kern(floatData(xd), out.data as F, rows, cols);
    if (xd !== x) xd.dispose();
  } else {
    const xm = gatherAxisLast(x, ax);
    const ym = xm.constructor === Float32Array ? new Float32Array(xm.length) : new Float64Array(xm.length);
    kern(xm, ym, rows, cols);
    scatterAxisLast(ym, out.data as F, x.shape, ax, false);
  }
  return record(op, { axis: ax }, [x], out);
}

/** softmax along `axis` (default last), numerically stable (max subtracted). */
export function softmax(x: Tensor, axis = -1): Tensor {
  return softmaxForward('softmax', x, axis);
}

/** log(softmax(x)) along `axis`, computed as x - logsumexp(x) (no log of tiny probabilities). */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return softmaxForward('logSoftmax', x, axis);
}

/** Shared rule: y is the node's output (softmax probabilities or log-probabilities). */
export function softmaxBackward(node: Node<'softmax'> | Node<'logSoftmax'>, gOut: Tensor): void {
  const x = node.inputs[0]!, y = node.out, ax = node.attrs.axis;
  if (!x.requiresGrad) return;
  const kern = node.op === 'softmax' ? K.softmaxBwd : K.logSoftmaxBwd;
  const cols = x.shape[ax]!, rows = cols === 0 ? 0 : x.size / cols;
  if (node.ctx) {
    // bf16 path: the forward kept bf16(y) only (see packsBf16).
    const g = dense(gOut);
    const { g: dx, fresh } = gradTarget(x, true);
    L.softmaxBwdBf16In((node.ctx as Tensor).data as Uint16Array, floatData(g) as Float32Array, dx.data as Float32Array, rows, cols, !fresh);
    if (g !== gOut) g.dispose();
    return;
  }
  if (ax === x.ndim - 1) {
    const g = dense(gOut);
    const { g: dx, fresh } = gradTarget(x, true);
    kern(floatData(y), floatData(g), dx.data as F, rows, cols, !fresh);
    if (g !== gOut) g.dispose();
  } else {
    const ym = gatherAxisLast(y, ax), gm = gatherAxisLast(gOut, ax);
    const dm = ym.constructor === Float32Array ? new Float32Array(ym.length) : new Float64Array(ym.length);
    kern(ym, gm, dm, rows, cols, false);
    const { g: dx } = gradTarget(x, false);
    scatterAxisLast(dm, dx.data as F, x.shape, ax, true);
  }
}

// ---------------------------------------------------------- cross-entropy

export interface CrossEntropyOptions {
  /** Targets equal to this value are skipped (no loss, no gradient, not counted). Default -100. */
  ignoreIndex?: number;
}

interface CeCtx {
  targets: Int32Array;
  count: number;
  /** fp32 logits (dense), or null when the forward kept their bf16 copy `lh` instead. */
  logits: Tensor | null;
  lh?: Tensor;
}

/**
 * Mean cross-entropy of logits (..., V) against int32 targets of shape logits.shape[:-1],
 * over the targets that are not ignoreIndex (NaN when every target is ignored, like
 * PyTorch). One fused pass: log-sum-exp per row saved; backward recomputes the
 * probabilities from it straight into the logits gradient.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  checkFloat(logits, 'crossEntropy', 'logits');
  if (logits.ndim < 2) throw new Error(`crossEntropy: logits must be (N, V) or (B, T, V), got ${shapeStr(logits.shape)}`);
  const V = logits.shape[logits.ndim - 1]!;
  const rowShape = logits.shape.slice(0, -1);
  if (!sameShape(targets.shape, rowShape)) {
    throw new Error(`crossEntropy: targets shape ${shapeStr(targets.shape)} must equal logits shape without the last dim ${shapeStr(rowShape)}`);
  }
  const rows = numel(rowShape);
  const t = int32Data(targets, 'crossEntropy: targets').slice();
  let count = 0;
  for (let i = 0; i < rows; i++) {
    const v = t[i]!;
    if (v === ignoreIndex) continue;
    if (v < 0 || v >= V) throw new Error(`crossEntropy: target ${v} at position ${i} is out of range [0, ${V}) (ignoreIndex is ${ignoreIndex})`);
    count++;
  }
  const xd = dense(logits);
  const lse = empty([rows], logits.dtype);
  const out = empty([], logits.dtype);
  if (packsBf16(logits, logits)) {
    const lh = empty(logits.shape, 'bfloat16');
    const total = L.crossEntropyFwdBf16Pack(floatData(xd) as Float32Array, t, lse.data as Float32Array, lh.data as Uint16Array, rows, V, ignoreIndex);
    out.data[0] = count > 0 ? total / count : NaN;
    if (xd !== logits) xd.dispose();
    const ctx: CeCtx = { targets: t, count, logits: null, lh };
    return record('crossEntropy', { ignoreIndex }, [logits, targets], out, [lse, lh], ctx, [0, 1]);
  }
  const total = K.crossEntropyFwd(floatData(xd), t, lse.data as F, rows, V, ignoreIndex);
  out.data[0] = count > 0 ? total / count : NaN;
  const saved = xd === logits ? [lse] : [lse, xd];
  const ctx: CeCtx = { targets: t, count, logits: xd };
  return record('crossEntropy', { ignoreIndex }, [logits, targets], out, saved, ctx);
}

export function crossEntropyBackward(node: Node<'crossEntropy'>, gOut: Tensor): void {
  const logits = node.inputs[0]!;
  if (!logits.requiresGrad) return;
  const { targets, count, logits: xd, lh } = node.ctx as CeCtx;
  const lse = node.saved[0]!;
  const V = logits.shape[logits.ndim - 1]!, rows = lse.size;
  const { g, fresh } = gradTarget(logits, true);
  const scale = count > 0 ? gOut.item() / count : 0;
  if (lh) L.crossEntropyBwdBf16In(lh.data as Uint16Array, targets, lse.data as Float32Array, g.data as Float32Array, rows, V, node.attrs.ignoreIndex, scale, !fresh);
  else K.crossEntropyBwd(floatData(xd!), targets, lse.data as F, g.data as F, rows, V, node.attrs.ignoreIndex, scale, !fresh);
}

// ------------------------------------------------------------- LayerNorm

interface NormCtx {
  /** fp32 input (dense), or null when the forward kept its bf16 copy `xh` instead (LayerNorm only). */
  x: Tensor | null;
  xh?: Tensor;
  w: Tensor;
}

/** LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias (biased variance, like PyTorch). */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps = 1e-5): Tensor {
  checkFloat(x, 'layerNorm');
  if (x.ndim === 0) throw new Error('layerNorm: input must have at least 1 dim');
  const C = x.shape[x.ndim - 1]!, rows = C === 0 ? 0 : x.size / C;
  checkParam(weight, x, C, 'layerNorm', 'weight');
  if (bias) checkParam(bias, x, C, 'layerNorm', 'bias');
  const xd = dense(x), wd = dense(weight), bd = bias ? dense(bias) : null;
  const out = empty(x.shape, x.dtype);
  const mean = empty([rows], x.dtype), rstd = empty([rows], x.dtype);
  if (packsBf16(x, x, weight, bias)) {
    const xh = empty(x.shape, 'bfloat16');
    L.layerNormFwdBf16Pack(floatData(xd) as Float32Array, floatData(wd) as Float32Array, bd ? floatData(bd) as Float32Array : null, out.data as Float32Array,
      mean.data as Float32Array, rstd.data as Float32Array, xh.data as Uint16Array, rows, C, eps);
    if (bd && bd !== bias) bd.dispose();
    if (xd !== x) xd.dispose();
    const saved = [mean, rstd, xh];
    if (wd !== weight) saved.push(wd);
    const ctx: NormCtx = { x: null, xh, w: wd };
    return record('layerNorm', { eps }, bias ? [x, weight, bias] : [x, weight], out, saved, ctx, [0]);
  }
  K.layerNormFwd(floatData(xd), floatData(wd), bd ? floatData(bd) : null, out.data as F, mean.data as F, rstd.data as F, rows, C, eps);
  if (bd && bd !== bias) bd.dispose();
  const saved = [mean, rstd];
  if (xd !== x) saved.push(xd);
  if (wd !== weight) saved.push(wd);
  const ctx: NormCtx = { x: xd, w: wd };
  return record('layerNorm', { eps }, bias ? [x, weight, bias] : [x, weight], out, saved, ctx);
}

export function layerNormBackward(node: Node<'layerNorm'>, gOut: Tensor): void {
  const [x, w, b] = node.inputs as [Tensor, Tensor, Tensor | undefined];
  const { x: xd, xh, w: wd } = node.ctx as NormCtx;
  const [mean, rstd] = node.saved as [Tensor, Tensor];
  const C = x.shape[x.ndim - 1]!, rows = mean.size;
  const g = dense(gOut);
  const dx = x.requiresGrad ? gradTarget(x, true) : null;
  const dw = w.requiresGrad ? gradTarget(w, false).g : null;
  const db = b && b.requiresGrad ? gradTarget(b, false).g : null;
  if (xh) {
    L.layerNormBwdBf16In(floatData(g) as Float32Array, xh.data as Uint16Array, floatData(wd) as Float32Array, mean.data as Float32Array, rstd.data as Float32Array,
      dx ? dx.g.data as Float32Array : null, dw ? dw.data as Float32Array : null, db ? db.data as Float32Array : null, rows, C, !(dx?.fresh ?? false));
    if (g !== gOut) g.dispose();
    return;
  }
  K.layerNormBwd(floatData(g), floatData(xd!), floatData(wd), mean.data as F, rstd.data as F,
    dx ? dx.g.data as F : null, dw ? dw.data as F : null, db ? db.data as F : null, rows, C, !(dx?.fresh ?? false));
  if (g !== gOut) g.dispose();
}

/** RMSNorm over the last dim: x / sqrt(mean(x²) + eps) * weight. */
export function rmsNorm(x: Tensor, weight: Tensor, eps = 1e-5): Tensor {
  checkFloat(x, 'rmsNorm');
  if (x.ndim === 0) throw new Error('rmsNorm: input must have at least 1 dim');
  const C = x.shape[x.ndim - 1]!, rows = C === 0 ? 0 : x.size / C;
  checkParam(weight, x, C, 'rmsNorm', 'weight');
  const xd = dense(x), wd = dense(weight);
  const out = empty(x.shape, x.dtype);
  const rstd = empty([rows], x.dtype);
  K.rmsNormFwd(floatData(xd), floatData(wd), out.data as F, rstd.data as F, rows, C, eps);
  const saved = [rstd];
  if (xd !== x) saved.push(xd);
  if (wd !== weight) saved.push(wd);
  const ctx: NormCtx = { x: xd, w: wd };
  return record('rmsNorm', { eps }, [x, weight], out, saved, ctx);
}

export function rmsNormBackward(node: Node<'rmsNorm'>, gOut: Tensor): void {
  const [x, w] = node.inputs as [Tensor, Tensor];
  const { x: xd, w: wd } = node.ctx as NormCtx;
  const rstd = node.saved[0]!;
  const C = x.shape[x.ndim - 1]!, rows = rstd.size;
  const g = dense(gOut);
  const dx = x.requiresGrad ? gradTarget(x, true) : null;
  const dw = w.requiresGrad ? gradTarget(w, false).g : null;
  K.rmsNormBwd(floatData(g), floatData(xd!), floatData(wd), rstd.data as F,
    dx ? dx.g.data as F : null, dw ? dw.data as F : null, rows, C, !(dx?.fresh ?? false));
  if (g !== gOut) g.dispose();
}

// ------------------------------------------------------------- embedding

/** Rows of weight (V, C) picked by int32 idx (any shape) → idx.shape + [C]. */
export function embedding(weight: Tensor, idx: Tensor): Tensor {
  checkFloat(weight, 'embedding', 'weight');
  if (weight.ndim !== 2) throw new Error(`embedding: weight must be (V, C), got ${shapeStr(weight.shape)}`);
  const [V, C] = weight.shape as [number, number];
  const ids = int32Data(idx, 'embedding: idx').slice();
  const n = ids.length;
  for (let i = 0; i < n; i++) {
    const v = ids[i]!;
    if (v < 0 || v >= V) throw new Error(`embedding: index ${v} at position ${i} is out of range for a table of ${V} rows (weight ${shapeStr(weight.shape)})`);
  }
  // Rows may be any distance apart as long as each row is contiguous (e.g. a column slice).
  const rowsOk = weight.strides[1] === 1 || C <= 1;
  const wd = rowsOk ? weight : dense(weight);
  const ldw = rowsOk ? (V <= 1 ? C : wd.strides[0]!) : C;
  const out = empty([...idx.shape, C], weight.dtype);
  K.embeddingFwd(floatData(wd), ldw, ids, out.data as F, n, C);
  if (wd !== weight) wd.dispose();
  return record('embedding', {}, [weight, idx], out, [], ids);
}

export function embeddingBackward(node: Node<'embedding'>, gOut: Tensor): void {
  const weight = node.inputs[0]!;
  if (!weight.requiresGrad) return;
  const ids = node.ctx as Int32Array;
  const C = weight.shape[1]!;
  const g = dense(gOut);
  const { g: dw } = gradTarget(weight, false);
  K.embeddingBwd(floatData(g), ids, dw.data as F, ids.length, C);
  if (g !== gOut) g.dispose();
}

// --------------------------------------------------------------- dropout

export interface DropoutOptions {
  /** Source of the mask; default the global generator. One uint32 is drawn per call. */
  rng?: Rng;
  /** When false the input is returned unchanged. Default true. */
  training?: boolean;
}

/**
 * Zeroes each element with probability p and scales the rest by 1/(1-p). The mask
 * comes from a counter-based hash of one seed drawn from `rng`, so it is the same
 * for the same Rng state on every backend and thread count; it is saved as one bit
 * per element. Identity (returns x itself) when p = 0 or not training.
 */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  checkFloat(x, 'dropout');
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout: p must be in [0, 1], got ${p}`);
  if (p === 0 || opts.training === false) return x;
  const rng = opts.rng ?? globalRng;
  const n = x.size;
  const seed = rng.nextU32();
  const scale = p === 1 ? 0 : 1 / (1 - p);
  const xd = dense(x);
  const out = empty(x.shape, x.dtype);
  const mask = empty([Math.ceil(n / 32)], 'int32');
  K.dropoutFwd(floatData(xd), out.data as F, mask.data as Int32Array, n, seed, p * 4294967296, scale);
  if (xd !== x) xd.dispose();
  return record('dropout', { p }, [x], out, [mask], scale);
}

export function dropoutBackward(node: Node<'dropout'>, gOut: Tensor): void {
  const x = node.inputs[0]!;
  if (!x.requiresGrad) return;
  const mask = node.saved[0]!;
  const g = dense(gOut);
  const { g: dx, fresh } = gradTarget(x, true);
  K.dropoutBwd(floatData(g), mask.data as Int32Array, dx.data as F, x.size, node.ctx as number, !fresh);
  if (g !== gOut) g.dispose();
}
