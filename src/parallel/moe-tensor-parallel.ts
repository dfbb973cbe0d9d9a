// Tensor parallelism for an MoE layer (nn/moe.ts), Megatron-Core's composition for a mesh
// without expert parallelism inside the tp group: expert-tensor-parallel size = tp.
//   - The attention around it stays tensor-parallel as in plans/gpt.ts; the MoE layer's
//     input is the tp-replicated activation (the row-parallel output after its all-reduce).
//   - The router is replicated: every tp rank computes the same fp32 logits from the same
//     input and weights, so routing, capacity, dropping, gates and the auxiliary losses are
//     identical on every rank, and so are their gradients (the gate's upstream gradient is
//     the replicated output gradient times the replicated expert output). Nothing to reduce.
//   - Every expert's MLP is split over F like the dense MLP: c_fc (E, F/tp, C) column-
//     parallel, c_proj (E, C, F/tp) row-parallel. The dispatched rows enter through f
//     (identity forward, all-reduce of their gradient: each rank's fc sees 1/tp of F), the
//     partial outputs leave through g (all-reduce), and the per-expert c_proj bias is added
//     once after the sum (replicated; its gradient is that of the summed output, identical).
//   - The shared expert is a dense MLP: column/row parallel with its own region entry.
// Only the expert path carries f/g: the router path's input gradient is already complete on
// every rank and must not be summed over the group.
// Sequence parallelism is refused for MoE (validateMoeTensorParallel): routing groups are
// whole sequences, so the layer would need its own gather; plain tp covers the layout.
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../core/tensor.js';
import { wrapMethod } from '../nn/module.js';
import type { MoeMlp } from '../nn/moe.js';
import type { GptConfig } from '../nn/gpt-config.js';
import { expertFF } from '../nn/moe-config.js';
import { add, embedding } from '../ops/index.js';
import { groupedMatmul } from '../ops/moe.js';
import { groupCopy, groupReduce, releaseStorage, type GroupCollectives } from '../ops/group.js';
import { regionEntry, rowParallel } from './tensor-parallel.js';
import type { Shard } from './placement.js';

/** How tensor parallelism splits the MoE parameters (null: replicated, e.g. the router and c_proj biases). */
export function moeShardOf(name: string, shape: readonly number[], rank: number, size: number): Shard | null {
  const s = (dim: number): Shard => ({ globalShape: shape, dim, blocks: 1, rank, size });
  if (/\.moe\.experts\.c_fc\.(weight|bias)$/.test(name)) return s(1); // (E, F, C), (E, F)
  if (/\.moe\.experts\.c_proj\.weight$/.test(name)) return s(2); // (E, C, F)
  if (/\.moe\.shared\.c_fc\.(weight|bias)$/.test(name)) return s(0);
  if (/\.moe\.shared\.c_proj\.weight$/.test(name)) return s(1);
  return null;
}

/** Checks that an MoE config splits over `tp` ranks, naming the offending field. */
export function validateMoeTensorParallel(m: GptConfig, tp: number, sequenceParallel: boolean): void {
  if (tp === 1 || !m.moe || m.moe.experts <= 0) return;
  const F = expertFF(m.moe, m.dFF);
  if (F % tp !== 0) throw new Error(`model.moe.dFF (${F}${m.moe.dFF > 0 ? '' : ', = model.dFF'}) must be divisible by parallel.tp (${tp}): every expert's MLP is split by its hidden width`);
  if (sequenceParallel) throw new Error(`parallel.sp=true is not supported with an MoE model (model.moe.experts = ${m.moe.experts}): routing groups are whole sequences; use parallel.sp=false (MoE runs on the tensor-parallel-replicated activations)`);
}

/** Expert index of every row of an expert-grouped block with counts[e] rows each. */
function rowExperts(counts: Int32Array, rows: number): Int32Array {
  // Rows past the experts' blocks are the dispatched rows' padding (nn/moe.ts): expert 0's
  // bias lands there, on rows nothing reads (their gradient is zero).
  const out = new Int32Array(rows);
  let o = 0;
  counts.forEach((c, e) => { out.fill(e, o, o + c); o += c; });
  return out;
}

/** Installs the tensor-parallel forward on one MoE layer whose expert tensors hold this rank's F-shards. */
export function tensorParallelMoe(m: MoeMlp, group: GroupCollectives): void {
  const ex = m.experts;
  // f on the dispatched rows: their gradient from the column-parallel fc is partial.
  wrapMethod(ex, 'forward', (next) => ((x: Tensor, counts: Int32Array) => next(groupCopy(x, group), counts)) as typeof ex.forward);
  // Row-parallel grouped projection: partial sums all-reduced, then the bias once.
  wrapMethod(ex.c_proj, 'forward', () => ((h: Tensor, counts: Int32Array) => {
    const partial = groupedMatmul(h, ex.c_proj.weight, null, counts);
    const y = groupReduce(partial, group, { consume: true });
    const out = add(y, embedding(ex.c_proj.bias, fromStorage(rowExperts(counts, y.shape[0]!), [y.shape[0]!], 'int32')));
    releaseStorage(y, partial);
    return out;
  }) as typeof ex.c_proj.forward);
  if (m.shared) {
    regionEntry(m.shared as unknown as Parameters<typeof regionEntry>[0], group, false);
    rowParallel(m.shared.c_proj as unknown as Parameters<typeof rowParallel>[0], group, false);
  }
}
