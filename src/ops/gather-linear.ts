// Sequence parallelism's region entry fused with the column-parallel linear behind it
// (Megatron-Core's LinearWithGradAccumulationAndAsyncCommunication with sequence_parallel):
//   forward   full = all-gather(xs) along `axis`;  y = full · Wᵀ + b;  full freed
//   backward  full = all-gather(xs) again;  dW += gYᵀ·full, db += Σ gY, dFull = gY·W;
//             dxs += reduce-scatter(dFull) along `axis`
// One node on the tape holding only the sequence shard xs: the gathered input is never kept
// between forward and backward, and backward re-gathers it WITHOUT re-running the forward
// GEMM (what a checkpoint of gather + linear would do). The GEMMs are matmul's own (forward:
// linear under no-grad; backward: matmulBackward on a node shaped as the one matmul would have
// recorded), so fp32 and mixed precision (train.precision bf16/fp16, loss scale included) run
// exactly the arithmetic of groupGather followed by linear.
//
// Not on the meta device: the planner traces the plain model (plan/models.ts) and prices
// sequence parallelism from its structure (plan/sp-terms.ts), so no meta trace reaches it.
import type { Tensor } from '../core/tensor.js';
import { shapeStr } from '../core/layout.js';
import { record, noGrad } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { accumulateGrad } from '../autograd/accumulate.js';
import { lowpKind } from '../backend/precision.js';
import { castLowp } from '../backend/lowp-tensor.js';
import type { Lowp } from '../backend/gemm-lowp.js';
import { linear, matmulBackward } from './matmul.js';
import { gatherAlong, reduceScatterAlong, type GroupCollectives } from './group.js';

/** The forward's precision, so backward runs its GEMMs as matmul's rule would (null: fp32/fp64). */
interface GatherLinearCtx { kind: Lowp | null }

/** all-gather(xs along `axis` over the group) (…, in) @ weight (out, in)ᵀ + bias (out,). */
export function gatherLinear(xs: Tensor, weight: Tensor, bias: Tensor | null, group: GroupCollectives, axis: number): Tensor {
  if (xs.dtype !== 'float32' && xs.dtype !== 'float64') throw new Error(`gatherLinear: expected float32 or float64, got ${xs.dtype}`);
  if (xs.ndim < 2 || axis < 0 || axis >= xs.ndim - 1) throw new Error(`gatherLinear: axis ${axis} must be a leading (not the feature) axis of ${shapeStr(xs.shape)}`);
  if (weight.ndim !== 2 || xs.shape[xs.ndim - 1] !== weight.shape[1]) {
    throw new Error(`gatherLinear: input ${shapeStr(xs.shape)} does not end in in_features of weight ${shapeStr(weight.shape)}`);
  }
  const full = gatherAlong(xs, group, axis);
  // No node for the GEMM: this op's node is the only one, and its rule re-gathers.
  const y = noGrad(() => linear(full, weight, bias));
  full.dispose();
  const ctx: GatherLinearCtx = { kind: xs.dtype === 'float32' ? lowpKind() : null };
  // Backward reads xs (to re-gather), neither the bias (index 2) nor the output (-1).
  return record('gatherLinear', { group, axis }, bias ? [xs, weight, bias] : [xs, weight], y, [], ctx, [2, -1]);
}

export function gatherLinearBackward(node: Node<'gatherLinear'>, gOut: Tensor): void {
  const [xs, weight, bias] = node.inputs as [Tensor, Tensor, Tensor | undefined];
  const { group, axis } = node.attrs;
  const { kind } = node.ctx as GatherLinearCtx;
  const full = gatherAlong(xs, group, axis);
  // A leaf for matmul's rule to write dFull into (its own buffer, freed below).
  full.requiresGrad = xs.requiresGrad;
  // What matmul(full, W, {transB}) records under mixed precision: the activation's 16-bit
  // cast kept for dW (full is no parameter), none for the parameter W (its per-step copy).
  const a16 = kind && weight.requiresGrad ? castLowp(full, kind) : null;
  const mm = {
    seq: node.seq, op: 'matmul', attrs: { transA: false, transB: true },
    inputs: bias ? [full, weight, bias] : [full, weight], out: node.out, saved: [],
    ctx: kind ? { kind, a16, b16: null } : undefined,
  } as Node<'matmul'>;
  matmulBackward(mm, gOut);
  a16?.dispose();
  const gFull = full.grad;
  full.grad = null;
  full.dispose();
  if (!gFull) return;
  const local = reduceScatterAlong(gFull, xs.shape, group, axis);
  gFull.dispose();
  accumulateGrad(xs, local, true);
}
