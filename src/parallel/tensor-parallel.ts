// Tensor parallelism (Megatron-LM), applied to plain modules from outside through the
// generic module hook (wrapMethod). The modules' weights must already hold this rank's
// shard (the plan materializes them; see plans/gpt.ts and placement.ts):
//   column-parallel linear  W (out/tp, in): output stays split over the group
//   row-parallel linear     W (out, in/tp): partial outputs are summed over the group
//                           (all-reduce, or reduce-scatter along the sequence under
//                           sequence parallelism), then the bias is added once
//   vocab-parallel embedding W (V/tp, C): rows outside this rank's slice are zeros,
//                           the partial embeddings are summed over the group
// plus the region entries: `copy` (f: identity forward, all-reduce backward) or under
// sequence parallelism `gather` (all-gather forward, reduce-scatter backward).
// Every collective is a differentiable op on the tape (ops/group.ts).
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../core/tensor.js';
import { wrapMethod, type Module } from '../nn/module.js';
import { add, mul, embedding, linear, layerNorm } from '../ops/index.js';
import { groupCopy, groupReduce, groupGather, groupScatter, releaseStorage, type GroupCollectives } from '../ops/group.js';
import { int32Data } from '../backend/nn-kernels.js';
import { gatherLinear } from '../ops/gather-linear.js';

/** The sequence axis of (B, T, C) activations: what sequence parallelism splits. */
export const SEQ_AXIS = 1;

type Fwd = Module & { forward: (x: Tensor, ...rest: never[]) => Tensor };

const optParam = (m: Module, name: string): Tensor | null => (m.ownParameters().some(([n]) => n === name) ? m.getParam(name) : null);

/** Region entry: replicated input into a tensor-parallel region (f, or all-gather under sequence parallelism). */
export function enterRegion(x: Tensor, group: GroupCollectives, sequenceParallel: boolean): Tensor {
  return sequenceParallel ? groupGather(x, group, SEQ_AXIS) : groupCopy(x, group);
}

/**
 * Region exit: sum partial outputs (g, or reduce-scatter along the sequence under
 * sequence parallelism). `consume`: x is a private temporary (a row-parallel GEMM's
 * partial output) whose values nothing reads again, so its full-size storage is not kept.
 */
export function exitRegion(x: Tensor, group: GroupCollectives, sequenceParallel: boolean, consume = false): Tensor {
  return sequenceParallel ? groupScatter(x, group, SEQ_AXIS, { consume }) : groupReduce(x, group, { consume });
}

/**
 * Sequence-parallel entry fused with a column-parallel linear (Megatron's all-gather in
 * front of QKV / fc1) as one op (ops/gather-linear.ts): the gathered full-sequence input is
 * used by the GEMM and then freed; backward re-gathers it from the saved sequence shard for
 * the weight gradient and reduce-scatters the input gradient, without re-running the GEMM.
 */
export function sequenceParallelColumn(m: Fwd, group: GroupCollectives): void {
  wrapMethod(m, 'forward', () => ((x: Tensor) => gatherLinear(x, m.getParam('weight'), optParam(m, 'bias'), group, SEQ_AXIS)) as Fwd['forward']);
}

/** Installs the region entry in front of a module's forward (its first argument is the activation). */
export function regionEntry(m: Fwd, group: GroupCollectives, sequenceParallel: boolean): void {
  wrapMethod(m, 'forward', (next) => ((x: Tensor, ...rest: never[]) => next(enterRegion(x, group, sequenceParallel), ...rest)) as Fwd['forward']);
}

/** Column-parallel linear whose input needs the region entry itself (e.g. a head after the last norm). */
export function columnParallelWithEntry(m: Fwd, group: GroupCollectives, sequenceParallel: boolean): void {
  wrapMethod(m, 'forward', () => ((x: Tensor) => linear(enterRegion(x, group, sequenceParallel), m.getParam('weight'), optParam(m, 'bias'))) as Fwd['forward']);
}

/** Row-parallel linear: x (…, in/tp) @ W_shard^T summed over the group, bias added after the sum. */
export function rowParallel(m: Fwd, group: GroupCollectives, sequenceParallel: boolean): void {
  wrapMethod(m, 'forward', () => ((x: Tensor) => {
    const partial = linear(x, m.getParam('weight'));
    const y = exitRegion(partial, group, sequenceParallel, true);
    const b = optParam(m, 'bias');
    if (!b) return y;
    // Under sequence parallelism each rank adds the bias to its rows only: its gradient is partial.
    const out = add(y, sequenceParallel ? groupCopy(b, group) : b);
    // The add's backward reads no values: keep only the biased copy (one tensor, as the fused
    // GEMM bias); without sp, y is the partial GEMM output all-reduced in place.
    releaseStorage(y, partial);
    return out;
  }) as Fwd['forward']);
}

/** Vocab-parallel embedding over rows [vocabStart, vocabStart + V/tp) of the table. */
export function vocabParallelEmbedding(m: Fwd, group: GroupCollectives, vocabStart: number, sequenceParallel: boolean): void {
  wrapMethod(m, 'forward', () => ((idx: Tensor) => {
    const w = m.getParam('weight');
    const Vl = w.shape[0]!;
    const ids = int32Data(idx, 'vocab-parallel embedding');
    const local = new Int32Array(ids.length), keep = new Float32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const j = ids[i]! - vocabStart;
      if (j >= 0 && j < Vl) { local[i] = j; keep[i] = 1; }
    }
    const e = embedding(w, fromStorage(local, idx.shape, 'int32'));
    const mask = fromStorage(w.dtype === 'float64' ? Float64Array.from(keep) : keep, [...idx.shape, 1], w.dtype);
    const masked = mul(e, mask);
    // The mask takes no gradient, so the mul's backward never reads e.
    releaseStorage(e);
    return exitRegion(masked, group, sequenceParallel, true);
  }) as Fwd['forward']);
}

/**
 * Sequence parallelism for a LayerNorm-like module (weight, bias, eps): it runs on this
 * rank's rows only, so its parameter gradients are partial sums; routing the
 * parameters through `copy` sums them over the group in backward.
 */
export function sequenceParallelNorm(m: Fwd & { eps: number }, group: GroupCollectives): void {
  wrapMethod(m, 'forward', () => ((x: Tensor) => layerNorm(x, groupCopy(m.getParam('weight'), group), optParam(m, 'bias') ? groupCopy(m.getParam('bias'), group) : null, m.eps)) as Fwd['forward']);
}
