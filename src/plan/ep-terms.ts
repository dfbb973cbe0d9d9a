// Expert parallelism's own memory and work in the planner, as parallel/expert-parallel.ts
// runs it (Athanor's runtime only: allocator athanor-pool). The traced step is the
// single-process MoE layer (nn/moe-meta.ts, balanced routing): dispatched rows xp (S, C),
// the experts' hidden activations h1 = fc(xp), h2 = act(h1), their output yp = proj(h2),
// combined. Under ep a rank sends its S rows and, balanced, receives S rows for its own
// experts, which it holds in the local layout at the row capacity cap = capacityRows(S)
// (expert-parallel-capacity.ts: the routing-dependent buffers keep one size):
//   - xp stays in the step's scope, and two more buffers of its rows are made: the
//     received rows xl (cap rows, saved by the first grouped GEMM) and the combine
//     exchange's output (S rows, saved by the combine);
//   - h1, h2 and the experts' output have cap rows instead of S (their gradients too), and
//     the activation between the grouped GEMMs runs over the padding rows (the GEMMs skip them).
import { capacityRows } from '../parallel/expert-parallel-capacity.js';
import type { TraceResult, TracedBuffer, TracedOp } from './trace.js';

/** Buffers of a layer's dispatched rows that expert parallelism adds: received rows (at capacity) and the combine exchange's output. */
export const EP_ROW_COPIES = 2;

export interface EpRowTerms {
  /** Forward dispatched rows xp → its bytes factor with the added copies: 1 + cap/S + 1. */
  copies: Map<number, number>;
  /** Expert activations sized at the capacity (h1, h2, the experts' output) → cap/S. */
  padded: Map<number, number>;
  /** Scale of a traced buffer's bytes under ep (1 for buffers ep does not change). */
  bufferScale(b: TracedBuffer): number;
  /** Scale of a traced op's time under ep: cap/S for the non-GEMM ops on padded rows. */
  opScale(op: TracedOp): number;
}

export function epRowTerms(tr: TraceResult): EpRowTerms {
  const copies = new Map<number, number>(), padded = new Map<number, number>();
  const fwd = tr.ops.filter((o) => o.phase === 'forward');
  const consumer = (id: number): TracedOp | undefined => fwd.find((o) => o.ins[0] === id);
  for (const o of fwd) {
    if (o.op !== 'moeDispatch' || o.out < 0) continue;
    const S = tr.buffers[o.out]!.shape[0]!;
    const f = S > 0 ? capacityRows(S) / S : 1;
    copies.set(o.out, 1 + f + 1);
    // xp → grouped GEMM → activation → grouped GEMM: the expert MLP of this layer.
    let at = o.out;
    for (let i = 0; i < 3; i++) {
      const next = consumer(at);
      if (!next || next.out < 0 || (i !== 1) !== (next.op === 'groupedMatmul')) break;
      padded.set(next.out, f);
      at = next.out;
    }
  }
  const src = (id: number): number => { const b = tr.buffers[id]; return b && b.kind === 'grad' && b.of >= 0 ? b.of : id; };
  return {
    copies, padded,
    bufferScale: (b) => copies.get(b.id) ?? padded.get(src(b.id)) ?? 1,
    // The activation and its gradient (outputs on padded rows); the combine reads the
    // exchanged S rows, and the grouped GEMMs skip the padding.
    opScale: (op) => (op.cls === 'gemm' || op.cls === 'view' || op.op.startsWith('moe') || op.op === 'groupedMatmul' || op.out < 0 ? 1 : padded.get(src(op.out)) ?? 1),
  };
}
