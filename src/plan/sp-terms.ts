// Sequence parallelism (tp with parallel.sp=true) as Athanor's trainer runs it
// (parallel/tensor-parallel.ts, ops/group.ts), priced on the measured synchronous tp path
// (tp-terms.ts, `commCpu.tpSync`). Counted from the trace's structure, per micro-batch:
//   - every region exit (row-parallel GEMM, vocab-parallel embedding): a reduce-scatter
//     along the sequence in forward, an all-gather in backward;
//   - every region entry (column-parallel GEMM, the vocab-parallel head): an all-gather in
//     forward, a reduce-scatter in backward; inside a block the entry is fused with its
//     GEMM and the gathered input freed (sequenceParallelColumn, ops/gather-linear.ts), so
//     backward gathers it again for the weight gradient (no forward GEMM is recomputed);
//   - every replicated parameter (LayerNorms, the position table) and row-parallel bias is
//     used on this rank's rows only: its gradient is all-reduced in backward (small);
//   - every all-gather or reduce-scatter of a (B, T, C) activation along T reorders the
//     full tensor once between (B, rank, T/tp, C) and the collective's rank-major layout.
// Without sp these are tp-terms' all-reduces (as many as exits + entries). A gather or
// reduce-scatter of a full-size tensor of S bytes moves half the volume of an all-reduce
// of S (ring: (tp−1)/tp·S against 2(tp−1)/tp·S), so each is priced as the measured
// all-reduce of S/2 bytes.
import type { ClusterSpec } from './cluster.js';
import type { TraceResult, TracedOp } from './trace.js';
import { tpRule } from './shard-rules.js';
import { interpLogLog } from './comm-model.js';

/** Region exits and entries of the trace (forward ops), as tensor-parallel.ts wraps them. */
export function spRole(op: TracedOp, nBlocks: number): 'exit' | 'entry' | 'fused-entry' | null {
  if (op.phase !== 'forward' && op.phase !== 'recompute') return null;
  const rules = op.params.map(tpRule);
  if (rules.includes('row') || (op.op === 'embedding' && rules.includes('vocab'))) return 'exit';
  if (op.cls === 'gemm' && rules.includes('col')) return op.block >= 0 && op.block < nBlocks ? 'fused-entry' : 'entry';
  if (op.cls === 'gemm' && rules.includes('vocab')) return 'entry';
  return null;
}

/** Full-size (B, T, C) bytes an exit or entry moves: an exit's output, an entry's activation input. */
export function spBytes(op: TracedOp, tr: TraceResult, role: 'exit' | 'entry' | 'fused-entry'): number {
  const id = role === 'exit' ? op.out : op.ins.find((i) => i >= 0);
  return id === undefined || id < 0 ? 0 : tr.buffers[id]!.bytes;
}

export interface SpCollectives {
  /** Gathers and reduce-scatters of one micro-batch, and their full-size bytes in all. */
  count: number; bytes: number;
  /** Gradient all-reduces of the parameters used on sequence shards, and their bytes. */
  gradCount: number; gradBytes: number;
}

/**
 * sp's collectives of one micro-batch on the stage whose blocks `onStage` accepts; `scale`
 * turns traced bytes into the layout's (precision). The recomputed forward (recompute=full)
 * repeats its exits' and entries' forward collectives (once: a fused entry re-gathers in its
 * own backward, which the forward op's count already holds).
 */
export function spCollectives(tr: TraceResult, onStage: (block: number) => boolean, scale: number): SpCollectives {
  let count = 0, bytes = 0, gradCount = 0, gradBytes = 0;
  for (const op of tr.ops) {
    const role = spRole(op, tr.nBlocks);
    if (!role || !onStage(op.block)) continue;
    const b = spBytes(op, tr, role) * scale;
    // forward + backward's conjugate (+ the fused entry's re-gather); a recomputed forward: its own again.
    const n = op.phase === 'recompute' ? 1 : role === 'fused-entry' ? 3 : 2;
    count += n; bytes += n * b;
  }
  for (const p of tr.params) {
    const r = tpRule(p.name);
    if ((r === 'replicated' || r === 'row-bias') && onStage(p.block)) { gradCount++; gradBytes += p.numel * 4 * scale; }
  }
  return { count, bytes, gradCount, gradBytes };
}

export interface SpSyncTerms { wall: number; cpu: number; count: number }

/** sp's collectives on the measured tp path (`commCpu.tpSync`), or null where it is not measured (tp-terms.ts). */
export function spSyncTerms(c: ClusterSpec, tp: number, intraNode: boolean, s: SpCollectives): SpSyncTerms | null {
  const t = c.commCpu?.tpSync;
  if (!t || tp !== 2 || !intraNode || s.count === 0) return null;
  const half = s.bytes / s.count / 2;
  const grad = s.gradCount ? s.gradBytes / s.gradCount : 0;
  const at = (tab: [number, number][]): number => s.count * interpLogLog(tab, half) + (s.gradCount ? s.gradCount * interpLogLog(tab, grad) : 0);
  return { wall: at(t.wall), cpu: at(t.cpu), count: s.count + s.gradCount };
}

/**
 * Compute sp adds to one traced forward op on Athanor's trainer (seconds): the rank-major
 * reorders of its collectives, forward and backward (a fused entry's backward: the
 * re-gather's and the reduce-scatter's; a recomputed forward, run inside backward: its own
 * forward one). The fused entry's GEMMs are the traced op's own (its forward, its backward):
 * it recomputes none. `copyRate`: bytes read + written per second of the reorder
 * (`classBandwidth.rates.sequenceAxisCopy`, measured by plan --calibrate; the memory
 * bandwidth where absent).
 */
export function spOpExtra(op: TracedOp, tr: TraceResult, scale: number, copyRate: number): { forward: number; backward: number } {
  const role = spRole(op, tr.nBlocks);
  if (!role) return { forward: 0, backward: 0 };
  const copy = (2 * spBytes(op, tr, role) * scale) / copyRate;
  if (op.phase === 'recompute') return { forward: 0, backward: copy };
  return { forward: copy, backward: role === 'fused-entry' ? 2 * copy : copy };
}

/**
 * Tape ops the tensor-parallel transforms add around one traced forward (or recomputed) op
 * of the plain model (parallel/tensor-parallel.ts, plans/gpt.ts), each of which the trainer
 * runs forward and backward like any traced op, with its fixed per-op cost and its share of
 * V8's helper threads:
 *   - a region exit: its collective (groupReduce, or groupScatter under sp), plus the bias
 *     add a row-parallel linear does after it, or the vocabulary mask's mul of the embedding;
 *   - a region entry: its groupCopy (groupGather under sp); an in-block entry under sp is
 *     fused with its GEMM (ops/gather-linear.ts), one op in place of the plain linear;
 *   - under sp, a groupCopy for every parameter used on this rank's rows only (norms, the
 *     position table, row-parallel biases), which sums its gradient over the group.
 */
export function tpRegionOps(op: TracedOp, nBlocks: number, sp: boolean): number {
  if (op.phase !== 'forward' && op.phase !== 'recompute') return 0;
  const role = spRole(op, nBlocks);
  const rules = op.params.map(tpRule);
  let n = 0;
  if (role === 'exit') n += 1 + (op.op === 'embedding' ? 1 : 0) + (rules.includes('row-bias') ? 1 : 0);
  else if (role === 'entry' || (role === 'fused-entry' && !sp)) n += 1;
  if (sp) n += rules.filter((r) => r === 'replicated' || r === 'row-bias').length;
  return n;
}
