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
// Routing load (`load`, the layout's epLoad): the rows the busiest ep rank receives over its
// balanced share S. Balanced routing (1, the default) is what the meta trace assumes; a
// real router is not balanced (dropless moe-tiny sends a rank 0.4-1.6x its share in its first
// steps), and every other rank of the group waits for the busiest one at each exchange. With
// load λ the busiest rank receives R = λ·S rows: cap = capacityRows(⌈λ·S⌉), the expert GEMMs
// run λ·S rows, the activation cap rows. The plan takes λ as an input (like a capacity
// factor: a property of the router and the data, not of the layout's shapes); it never
// derives it from measured step times.
import { capacityRows } from '../parallel/expert-parallel-capacity.js';
import type { ClusterSpec } from './cluster.js';
import { interpLogLog } from './comm-model.js';
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
  /** Scale of a traced op's time under ep: cap/S for the non-GEMM ops on padded rows, λ for the expert GEMMs. */
  opScale(op: TracedOp): number;
  /** λ: the busiest rank's received rows over the balanced share (1 = balanced). */
  load: number;
}

/** Checks a routing load λ (the layout's epLoad): a finite number >= 1. */
export function checkEpLoad(load: number, where = 'epLoad'): number {
  if (!Number.isFinite(load) || load < 1) throw new Error(`${where} must be a number >= 1 (the busiest ep rank's received rows over the balanced share; 1 = balanced), got ${load}`);
  return load;
}

export function epRowTerms(tr: TraceResult, load = 1): EpRowTerms {
  checkEpLoad(load);
  const copies = new Map<number, number>(), padded = new Map<number, number>();
  const fwd = tr.ops.filter((o) => o.phase === 'forward');
  const consumer = (id: number): TracedOp | undefined => fwd.find((o) => o.ins[0] === id);
  for (const o of fwd) {
    if (o.op !== 'moeDispatch' || o.out < 0) continue;
    const S = tr.buffers[o.out]!.shape[0]!;
    const f = S > 0 ? capacityRows(Math.ceil(S * load)) / S : 1;
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
    copies, padded, load,
    bufferScale: (b) => copies.get(b.id) ?? padded.get(src(b.id)) ?? 1,
    // The activation and its gradient (outputs on padded rows); the combine reads the
    // exchanged S rows, and the grouped GEMMs skip the padding but run the λ·S received rows.
    opScale: (op) => {
      if (op.out < 0 || op.cls === 'view' || op.op.startsWith('moe')) return 1;
      const f = padded.get(src(op.out));
      if (f === undefined) return 1;
      return op.op === 'groupedMatmul' || op.cls === 'gemm' ? load : f;
    },
  };
}

/**
 * The row exchanges' staging pair (parallel/expert-parallel.ts, expert-parallel-comm.ts):
 * two shared buffers sized by max(cap, S) rows of C float32 values (both sides of every
 * row exchange fit in it), grown only with the capacity. The largest layer among those
 * `inBlocks` selects, at routing load λ.
 */
export function epStagingBytes(tr: TraceResult, load: number, inBlocks: (block: number) => boolean): number {
  let m = 0;
  for (const o of tr.ops) {
    if (o.op !== 'moeDispatch' || o.phase !== 'forward' || o.out < 0 || !inBlocks(o.block)) continue;
    const [S = 0, C = 0] = tr.buffers[o.out]!.shape;
    m = Math.max(m, 2 * Math.max(capacityRows(Math.ceil(S * load)), S) * C * 4);
  }
  return m;
}

/**
 * Expert parallelism's exchanges on the measured synchronous path (`commCpu.epSync`, measured
 * by `athanor plan --calibrate` through parallel/expert-parallel-comm.ts as the trainer runs
 * it): every exchange is waited for by the compute thread inside forward or backward, so its
 * whole wall time is on the step's critical path, and each is a point where the ep ranks meet
 * (the faster waits for the slower: skew share × compute, as tp-terms.ts prices tp).
 */
export interface EpSyncTerms {
  /** Wall seconds of the exchanges per micro-batch. */
  wall: number;
  /** CPU seconds a rank spends in them per micro-batch (all its threads). */
  cpu: number;
  /** Seconds per micro-batch a rank waits for the others at the exchanges: skew share × its compute. */
  skew: number;
}

/**
 * The ep exchanges of one micro-batch, per MoE layer: one exchange of the row counts
 * (`countBytes` per rank) and four of rows (dispatch and combine, forward and backward) of
 * `rowBytes` per rank each (the busiest rank's), over a 2-rank group on one node; null where
 * the spec has no such measurement (published clusters keep the α–β model) or the group is
 * not what was measured. `compute`: the rank's compute seconds per micro-batch.
 */
export function epSyncTerms(c: ClusterSpec, ep: number, intraNode: boolean, layers: number, rowBytes: number, countBytes: number, compute: number): EpSyncTerms | null {
  const t = c.commCpu?.epSync;
  if (!t || ep !== 2 || !intraNode || layers === 0) return null;
  const at = (pts: [number, number][], bytes: number): number => interpLogLog(pts, Math.max(bytes, Math.min(...pts.map((p) => p[0]))));
  return {
    wall: layers * (at(t.wall, countBytes) + 4 * at(t.wall, rowBytes)),
    cpu: layers * (at(t.cpu, countBytes) + 4 * at(t.cpu, rowBytes)),
    skew: t.skew.value * compute,
  };
}

/**
 * The other ep ranks' helper threads at the synchronous exchanges, seconds per micro-batch.
 * Where the ranks take every core of their node (overhead-terms.ts helpersInWall), a rank's
 * helper threads (V8's GC and compiler workers: `helperWallPerOp` seconds per traced op,
 * the calibrated device.overhead.helperCpuPerOp) find no idle core and take it from a main
 * thread. Between two exchanges a stalled rank holds up its whole group (an exchange
 * completes only when every member has reached it, and a step has 5 per MoE layer and
 * micro-batch), so each rank's step takes, besides its own helpers' time (priced per op in
 * its compute), the other ep − 1 members' helpers. The calibrated skew (commCpu.epSync.skew)
 * does not hold this: it is measured after bare GEMM stretches, which allocate nothing and
 * leave the helper threads idle. 0 where helpers are not in the wall (a spare core runs them).
 */
export function epHelperStall(ep: number, opsPerMicroBatch: number, helperWallPerOp: number): number {
  return ep > 1 ? (ep - 1) * opsPerMicroBatch * helperWallPerOp : 0;
}
