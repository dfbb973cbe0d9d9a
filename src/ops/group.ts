// Differentiable collectives over a tensor-parallel group (Megatron's conjugate f/g
// operators), recorded on the tape like any other op so backward runs the conjugate
// collective:
//   groupCopy     f: identity forward, all-reduce (sum) backward  (entry of a TP region)
//   groupReduce   g: all-reduce (sum) forward, identity backward  (exit of a TP region)
//   groupGather   all-gather along an axis forward, reduce-scatter backward (sequence parallel entry)
//   groupScatter  reduce-scatter along an axis forward, all-gather backward (sequence parallel exit)
// and the vocabulary-parallel cross-entropy, which never gathers the full logits.
// The group is any object with synchronous collectives (forward/backward are
// synchronous code): the parallel layer runs them on its communication thread.
import { empty, type Tensor } from '../core/tensor.js';
import { pool } from '../core/buffer-pool.js';
import { shapeStr } from '../core/layout.js';
import { record } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { accumulateGrad } from '../autograd/accumulate.js';
import { dense, floatData, gradTarget, int32Data, type F } from '../backend/nn-kernels.js';
import { lowpKind } from '../backend/precision.js';
import { vpceRowMax, vpceSumExp, vpceGrad } from '../backend/vocab-parallel-kernels.js';

export interface GroupCollectives {
  readonly rank: number;
  readonly size: number;
  /** In place. `wire` 'bf16': the values travel rounded to bf16 (sums accumulate in fp32, rounded once). */
  allReduce(buf: F, op: 'sum' | 'max', wire?: Wire): void;
  /** output (size × input.length) = every rank's input, in rank order. */
  allGather(input: F, output: F, wire?: Wire): void;
  /** output (input.length / size) = this rank's chunk of the element-wise sum of every rank's input. */
  reduceScatter(input: F, output: F, wire?: Wire): void;
}

export type Wire = 'fp32' | 'bf16';

/**
 * Activations and their gradients cross the tensor-parallel group in the compute dtype
 * (bf16 under train.precision=bf16, as Megatron's bf16 runs do); the vocab-parallel
 * cross-entropy's per-row statistics always travel in fp32.
 */
function wire(): Wire {
  return lowpKind() === 'bfloat16' ? 'bf16' : 'fp32';
}

function checkFloat(t: Tensor, where: string): void {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`${where}: expected float32 or float64, got ${t.dtype}`);
}

function copyOf(x: Tensor): Tensor {
  const xd = dense(x);
  const out = empty(x.shape, x.dtype);
  (out.data as F).set(floatData(xd).subarray(0, x.size));
  if (xd !== x) xd.dispose();
  return out;
}

/**
 * Options of the region-exit collectives. `consume`: the caller hands x over; no forward
 * reads its values again and no backward reads them at all (the exit's backward needs
 * only its shape, and the op that produced x needs its own inputs, not its output), so
 * the all-reduce runs in x's storage (no copy) and the reduce-scatter returns x's storage
 * to the pool right away. The tensor itself stays on the tape for the graph.
 */
export interface ExitOptions { consume?: boolean }

/**
 * Frees x's storage now, keeping the tensor object (and its tape node) for backward's
 * graph walk: for an activation whose values no later forward op and no backward rule
 * reads (e.g. the input of an add, or of a mul by a constant mask). Left alone while
 * another view shares the storage.
 */
export function releaseStorage(x: Tensor, ...consumed: Tensor[]): void {
  const b = x.box;
  // `consumed`: other tensors sharing this storage whose values nothing reads either
  // (e.g. the GEMM output a consuming all-reduce ran in). Any other view: leave it to the scope.
  if (b.refs !== 1 + consumed.filter((t) => t !== x && t.box === b).length || b.data === null || b.meta) return;
  if (b.pooled) pool.release(x.dtype, b.data);
  b.data = null;
}

/** f: identity forward; backward all-reduces (sums) the gradient over the group. */
export function groupCopy(x: Tensor, group: GroupCollectives): Tensor {
  checkFloat(x, 'groupCopy');
  // A view: the forward is the identity, so no activation memory is spent on it.
  return record('groupCopy', { group }, [x], x.view(x.shape, x.strides, x.offset));
}

export function groupCopyBackward(node: Node<'groupCopy'>, gOut: Tensor): void {
  const g = copyOf(gOut);
  if (node.attrs.group.size > 1) node.attrs.group.allReduce(g.data as F, 'sum', wire());
  accumulateGrad(node.inputs[0]!, g, true);
}

/** g: all-reduce (sum) forward; identity backward. */
export function groupReduce(x: Tensor, group: GroupCollectives, opts: ExitOptions = {}): Tensor {
  checkFloat(x, 'groupReduce');
  const inPlace = opts.consume === true && x.isContiguous() && x.offset === 0 && x.box.refs === 1;
  const out = inPlace ? x.view(x.shape, x.strides, 0) : copyOf(x);
  if (group.size > 1) group.allReduce(out.data as F, 'sum', wire());
  return record('groupReduce', { group }, [x], out);
}

export function groupReduceBackward(node: Node<'groupReduce'>, gOut: Tensor): void {
  accumulateGrad(node.inputs[0]!, copyOf(gOut), true);
}

/** [outer][size][chunk] ⇄ [size][outer][chunk]: rank-major order for the collective buffers (plan --calibrate times it). */
export function toRankMajor(src: F, dst: F, outer: number, size: number, chunk: number): void {
  for (let o = 0; o < outer; o++) for (let r = 0; r < size; r++) dst.set(src.subarray((o * size + r) * chunk, (o * size + r + 1) * chunk), (r * outer + o) * chunk);
}
function fromRankMajor(src: F, dst: F, outer: number, size: number, chunk: number): void {
  for (let o = 0; o < outer; o++) for (let r = 0; r < size; r++) dst.set(src.subarray((r * outer + o) * chunk, (r * outer + o + 1) * chunk), (o * size + r) * chunk);
}

function axisParts(shape: readonly number[], axis: number): { outer: number; inner: number } {
  let outer = 1, inner = 1;
  shape.forEach((d, i) => { if (i < axis) outer *= d; else if (i > axis) inner *= d; });
  return { outer, inner };
}

/** All-gather along `axis` (every rank's slice in rank order); backward reduce-scatters. */
export function groupGather(x: Tensor, group: GroupCollectives, axis: number): Tensor {
  checkFloat(x, 'groupGather');
  if (axis < 0 || axis >= x.ndim) throw new Error(`groupGather: axis ${axis} out of range for ${shapeStr(x.shape)}`);
  const out = gatherAlong(x, group, axis);
  return record('groupGather', { group, axis }, [x], out);
}

export function groupGatherBackward(node: Node<'groupGather'>, gOut: Tensor): void {
  const x = node.inputs[0]!;
  if (!x.requiresGrad) return;
  const { group, axis } = node.attrs;
  const local = reduceScatterAlong(gOut, x.shape, group, axis);
  accumulateGrad(x, local, true);
}

/** Reduce-scatter along `axis`: the sum over ranks, this rank keeping its slice; backward all-gathers. */
export function groupScatter(x: Tensor, group: GroupCollectives, axis: number, opts: ExitOptions = {}): Tensor {
  checkFloat(x, 'groupScatter');
  if (axis < 0 || axis >= x.ndim) throw new Error(`groupScatter: axis ${axis} out of range for ${shapeStr(x.shape)}`);
  const n = x.shape[axis]!;
  if (n % group.size !== 0) throw new Error(`groupScatter: dimension ${axis} of ${shapeStr(x.shape)} is not divisible by the group size ${group.size}`);
  const shape = [...x.shape];
  shape[axis] = n / group.size;
  const out = empty(shape, x.dtype);
  const xd = dense(x);
  if (group.size === 1) (out.data as F).set(floatData(xd).subarray(0, x.size));
  else {
    const { outer, inner } = axisParts(x.shape, axis);
    const tmp = empty(x.shape, x.dtype);
    toRankMajor(floatData(xd), tmp.data as F, outer, group.size, (n / group.size) * inner);
    group.reduceScatter(tmp.data as F, out.data as F, wire());
    tmp.dispose();
  }
  if (xd !== x) xd.dispose();
  if (opts.consume) releaseStorage(x);
  return record('groupScatter', { group, axis }, [x], out);
}

export function groupScatterBackward(node: Node<'groupScatter'>, gOut: Tensor): void {
  const x = node.inputs[0]!;
  if (!x.requiresGrad) return;
  const { group, axis } = node.attrs;
  const g = dense(gOut);
  const full = empty(x.shape, x.dtype);
  if (group.size === 1) (full.data as F).set(floatData(g).subarray(0, gOut.size));
  else {
    const { outer, inner } = axisParts(x.shape, axis);
    const tmp = empty(x.shape, x.dtype);
    group.allGather(floatData(g).subarray(0, gOut.size), tmp.data as F, wire());
    fromRankMajor(tmp.data as F, full.data as F, outer, group.size, gOut.shape[axis]! * inner);
    tmp.dispose();
  }
  if (g !== gOut) g.dispose();
  accumulateGrad(x, full, true);
}

interface VpCeCtx { targets: Int32Array; count: number; logits: Tensor; max: F; sum: F }

/**
 * Mean cross-entropy when each rank holds logits (N, V/size) for vocabulary entries
 * [vocabStart, vocabStart + V/size): the row max is all-reduced (max), then the row
 * sums of exp and the target logits (sum); only 3·N numbers cross the group, never
 * the (N, V) logits. Targets equal to ignoreIndex do not count.
 */
export function vocabParallelCrossEntropy(logits: Tensor, targets: Tensor, group: GroupCollectives, vocabStart: number, vocabSize: number, ignoreIndex = -100): Tensor {
  checkFloat(logits, 'vocabParallelCrossEntropy');
  if (logits.ndim !== 2) throw new Error(`vocabParallelCrossEntropy: logits must be (N, V/tp), got ${shapeStr(logits.shape)}`);
  const [N, Vl] = logits.shape as [number, number];
  if (targets.size !== N) throw new Error(`vocabParallelCrossEntropy: ${targets.size} targets for ${N} rows`);
  const t = int32Data(targets, 'vocabParallelCrossEntropy: targets').slice();
  let count = 0;
  for (let i = 0; i < N; i++) {
    const v = t[i]!;
    if (v === ignoreIndex) continue;
    if (v < 0 || v >= vocabSize) throw new Error(`vocabParallelCrossEntropy: target ${v} at position ${i} is out of range [0, ${vocabSize}) (ignoreIndex is ${ignoreIndex})`);
    count++;
  }
  const xd = dense(logits);
  const z = floatData(xd);
  const F64 = logits.dtype === 'float64';
  const max: F = F64 ? new Float64Array(N) : new Float32Array(N);
  vpceRowMax(z, N, Vl, max);
  if (group.size > 1) group.allReduce(max, 'max');
  // [0, N): sum of exp(z - max); [N, 2N): the target's logit on the rank that holds it.
  const sums: F = F64 ? new Float64Array(2 * N) : new Float32Array(2 * N);
  vpceSumExp(z, N, Vl, max, t, vocabStart, ignoreIndex, sums);
  if (group.size > 1) group.allReduce(sums, 'sum');
  let total = 0;
  for (let i = 0; i < N; i++) if (t[i] !== ignoreIndex) total += Math.log(sums[i]!) + max[i]! - sums[N + i]!;
  const out = empty([], logits.dtype);
  out.data[0] = count > 0 ? total / count : NaN;
  const ctx: VpCeCtx = { targets: t, count, logits: xd, max, sum: sums.subarray(0, N) as F };
  return record('vocabParallelCrossEntropy', { group, vocabStart, ignoreIndex }, [logits, targets], out, xd === logits ? [] : [xd], ctx);
}

export function vocabParallelCrossEntropyBackward(node: Node<'vocabParallelCrossEntropy'>, gOut: Tensor): void {
  const logits = node.inputs[0]!;
  if (!logits.requiresGrad) return;
  const { targets, count, logits: xd, max, sum } = node.ctx as VpCeCtx;
  const { vocabStart, ignoreIndex } = node.attrs;
  const [N, Vl] = logits.shape as [number, number];
  const z = floatData(xd);
  const { g: gt, fresh } = gradTarget(logits, true);
  const g = floatData(gt);
  const scale = count > 0 ? gOut.item() / count : 0;
  vpceGrad(z, g, N, Vl, max, sum, targets, vocabStart, ignoreIndex, scale, fresh);
}

/**
 * The data path of groupGather without the tape: a fresh tensor holding every rank's x
 * along `axis` in rank order (ops/gather-linear.ts gathers in forward and again in backward).
 */
export function gatherAlong(x: Tensor, group: GroupCollectives, axis: number): Tensor {
  const shape = [...x.shape];
  shape[axis] = x.shape[axis]! * group.size;
  const out = empty(shape, x.dtype);
  const xd = dense(x);
  if (group.size === 1) (out.data as F).set(floatData(xd).subarray(0, x.size));
  else {
    const { outer, inner } = axisParts(x.shape, axis);
    const tmp = empty(shape, x.dtype);
    group.allGather(floatData(xd).subarray(0, x.size), tmp.data as F, wire());
    fromRankMajor(tmp.data as F, out.data as F, outer, group.size, x.shape[axis]! * inner);
    tmp.dispose();
  }
  if (xd !== x) xd.dispose();
  return out;
}

/**
 * The data path of groupGatherBackward without the tape: this rank's slice (shape
 * `local`) along `axis` of the sum over the group of every rank's g.
 */
export function reduceScatterAlong(g0: Tensor, local: readonly number[], group: GroupCollectives, axis: number): Tensor {
  const out = empty(local, g0.dtype);
  const g = dense(g0);
  if (group.size === 1) (out.data as F).set(floatData(g).subarray(0, out.size));
  else {
    const { outer, inner } = axisParts(local, axis);
    const tmp = empty(g0.shape, g0.dtype);
    toRankMajor(floatData(g), tmp.data as F, outer, group.size, local[axis]! * inner);
    group.reduceScatter(tmp.data as F, out.data as F, wire());
    tmp.dispose();
  }
  if (g !== g0) g.dispose();
  return out;
}
