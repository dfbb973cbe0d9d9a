// Expert parallelism, applied to a plain MoE model from outside (the model never imports
// this). The E experts of every MoE layer are sharded over the P ranks of an ep group:
// rank p holds experts [p·E/P, (p+1)·E/P). Routing stays local; the expert-grouped rows
// (already contiguous per expert, so per destination rank) travel with all-to-all-v:
//
//   xp (S, C) grouped by global expert ─allToAllV→ (cap, C) grouped by local expert
//   ─grouped GEMM MLP→ (cap, C) ─allToAllV→ (S, C) as xp
//
// The rows arrive as [source rank][local expert] blocks; the exchange writes them straight
// into [local expert][source rank] order (and reads them back from it), so no separate
// regrouping copy exists. The local rows are sized at a capacity `cap` ≥ R (the rows this
// rank receives; expert-parallel-capacity.ts) so that the routing-dependent buffers keep
// one size from step to step; rows past R are zero padding outside every expert's block.
// Both exchanges are ops on the tape, so backward runs the adjoint exchanges. Expert
// gradients are reduced over the expert-data-parallel group (ranks that hold the same
// experts); dense gradients over the whole data-parallel group.
import { empty, type Tensor } from '../core/tensor.js';
import type { MoeMlp } from '../nn/moe.js';
import type { ShardRequest } from '../nn/materialize.js';
import { allToAllV, type RowExchange } from '../ops/moe.js';
import type { A2aAlgorithm, EpComm } from './expert-parallel-comm.js';
import { RowCapacity } from './expert-parallel-capacity.js';
import { collectGarbage } from '../core/collect-garbage.js';
import { pool } from '../core/buffer-pool.js';

/** Parameter names that belong to the sharded experts. */
export function isExpertParam(name: string): boolean {
  return /(^|\.)moe\.experts\./.test(name);
}

/** Shard function for nn/materialize: expert tensors keep rows [p·E/P, (p+1)·E/P) of dim 0. */
export function expertShard(epRank: number, epSize: number): (name: string, meta: Tensor) => ShardRequest | null {
  return (name, meta) => {
    if (!isExpertParam(name) || epSize === 1) return null;
    const E = meta.shape[0]!;
    if (E % epSize !== 0) throw new Error(`expert parallel: ${name} has ${E} experts, not divisible by parallel.ep = ${epSize}`);
    const El = E / epSize, row = meta.size / E;
    return { shape: [El, ...meta.shape.slice(1)], runs: [{ start: epRank * El * row, length: El * row }] };
  };
}

/** What expert parallelism is applied to: a whole GPT, or a pipeline rank's stages (their MoE layers). */
export interface ExpertModel {
  moeLayers(): MoeMlp[];
  namedParameters(): [string, Tensor][];
}

export interface ExpertParallelOptions {
  comm: EpComm;
  /** Global ranks of this rank's ep group, in ep order. */
  epRanks: number[];
  /** Global ranks holding the same experts (the expert-data-parallel group). */
  edpRanks: number[];
  a2a: A2aAlgorithm;
  /** Ranks per node for the hierarchical all-to-all (default: the launcher's local world size). */
  nodeSize?: number;
}

/** Statistics of the last exchanges (for benchmarks and the progress line). */
export interface ExchangeStats {
  calls: number; rowsSent: number; seconds: number;
  /** Rows received for this rank's experts (dispatch direction), summed over forwards. */
  rowsReceived: number;
  /** Forwards (MoE layers × micro-batches) and the last capacity of rows (expert-parallel-capacity.ts). */
  forwards: number; capacity: number;
}

export class ExpertParallel {
  readonly epSize: number;
  readonly epRank: number;
  readonly stats: ExchangeStats = { calls: 0, rowsSent: 0, seconds: 0, rowsReceived: 0, forwards: 0, capacity: 0 };
  private readonly capacity = new RowCapacity();
  /** The capacity of the last forward (0: none yet): when it moves, the old size's pooled buffers are let go. */
  private lastCap = 0;

  constructor(readonly model: ExpertModel, readonly o: ExpertParallelOptions) {
    this.epSize = o.epRanks.length;
    this.epRank = o.epRanks.indexOf(o.comm.rank);
    if (this.epRank < 0) throw new Error(`expert parallel: rank ${o.comm.rank} is not in its ep group [${o.epRanks.join(',')}]`);
    for (const m of model.moeLayers()) {
      const El = m.experts.count, E = m.cfg.experts;
      if (El * this.epSize !== E) {
        throw new Error(`expert parallel: rank ${o.comm.rank} holds ${El} of ${E} experts but parallel.ep = ${this.epSize}; build the model with expertShard()`);
      }
      m.expertRunner = (xp, counts, local, maxPerExpert) => this.run(m, xp, counts, local, maxPerExpert);
    }
  }

  /** This rank's expert parameters (reduced over edp) and the rest (reduced over dp). */
  split(): { experts: [string, Tensor][]; dense: [string, Tensor][] } {
    const experts: [string, Tensor][] = [], dense: [string, Tensor][] = [];
    for (const [n, p] of this.model.namedParameters()) (isExpertParam(n) ? experts : dense).push([n, p]);
    return { experts, dense };
  }

  /**
   * Sums expert gradients over the edp group and scales them by 1/dp: each rank's local
   * loss is a mean over its tokens and the global loss is the mean over dp ranks, while
   * an expert's gradient on a rank already sums the contributions of its whole ep group.
   */
  reduceExpertGrads(dp: number): void {
    const { experts } = this.split();
    const s = 1 / dp;
    if (this.o.edpRanks.length <= 1) {
      // Nothing to reduce: scale in place (no staging copy of every expert gradient).
      for (const [, p] of experts) {
        if (!p.grad) { p.grad = empty(p.shape, p.dtype); p.grad.kept = true; (p.grad.data as Float32Array).fill(0, p.grad.offset, p.grad.offset + p.size); continue; }
        scaleInto((p.grad.data as Float32Array).subarray(p.grad.offset, p.grad.offset + p.size), null, 0, s);
      }
      return;
    }
    let n = 0;
    for (const [, p] of experts) n += p.size;
    const buf = this.o.comm.shared('grad', n) as Float32Array;
    let o = 0;
    for (const [, p] of experts) {
      if (p.grad) buf.set((p.grad.data as Float32Array).subarray(p.grad.offset, p.grad.offset + p.size), o);
      else buf.fill(0, o, o + p.size);
      o += p.size;
    }
    this.o.comm.allReduce(this.o.edpRanks, buf, 'sum');
    o = 0;
    for (const [, p] of experts) {
      if (!p.grad) { p.grad = empty(p.shape, p.dtype); p.grad.kept = true; }
      scaleInto((p.grad.data as Float32Array).subarray(p.grad.offset, p.grad.offset + p.size), buf, o, s);
      o += p.size;
    }
  }

  private run(m: MoeMlp, xp: Tensor, counts: Int32Array, local: (x: Tensor, counts: Int32Array) => Tensor, maxPerExpert = Infinity): Tensor {
    if (xp.dtype !== 'float32') throw new Error(`expert parallel: exchanges float32 rows, got ${xp.dtype}`);
    const P = this.epSize, El = m.experts.count, C = xp.shape[1]!;
    const comm = this.o.comm, ranks = this.o.epRanks;
    // 1. How many rows of each of its local experts every rank receives from every other.
    const sendCnt = comm.shared('cnt-send', P * El, 'i32') as Int32Array;
    const recvCnt = comm.shared('cnt-recv', P * El, 'i32') as Int32Array;
    sendCnt.set(counts);
    const nodeSize = this.o.nodeSize ?? comm.localWorldSize;
    let nodeRows: { there: Int32Array; back: Int32Array } | undefined;
    if (this.o.a2a === 'hierarchical' && nodeSize > 1 && nodeSize < P && P % nodeSize === 0) {
      // The hierarchical exchange needs the send counts of the node's members; gather the
      // whole count matrix once here instead of inside each of the four exchanges.
      const mat = comm.shared('cnt-all', P * P * El, 'i32') as Int32Array;
      comm.allGather(ranks, sendCnt, mat);
      for (let p = 0; p < P; p++) for (let e = 0; e < El; e++) recvCnt[p * El + e] = mat[p * P * El + this.epRank * El + e]!;
      nodeRows = nodeRowCounts(mat, P, El, C, nodeSize, Math.floor(this.epRank / nodeSize));
    } else {
      const each = new Array<number>(P).fill(El);
      comm.allToAllV(ranks, sendCnt, each, recvCnt, each);
    }
    const sendRows: number[] = [], recvRows: number[] = [];
    for (let p = 0; p < P; p++) {
      let s = 0, r = 0;
      for (let e = 0; e < El; e++) { s += counts[p * El + e]!; r += recvCnt[p * El + e]!; }
      sendRows.push(s);
      recvRows.push(r);
    }
    const R = recvRows.reduce((a, b) => a + b, 0);
    // 2. The received blocks [source][local expert] and where each goes in the local
    // layout [local expert][source]: triples (received row, local row, rows).
    const blocks = new Int32Array(3 * P * El);
    const localCounts = new Int32Array(El);
    const recvStart = new Int32Array(P * El);
    let o = 0;
    for (let p = 0; p < P; p++) for (let e = 0; e < El; e++) { recvStart[p * El + e] = o; o += recvCnt[p * El + e]!; }
    let w = 0, b = 0;
    for (let e = 0; e < El; e++) {
      for (let p = 0; p < P; p++) {
        const n = recvCnt[p * El + e]!;
        blocks[b++] = recvStart[p * El + e]!; blocks[b++] = w; blocks[b++] = n;
        w += n;
        localCounts[e]! += n;
      }
    }
    // In capacity mode no rank can receive more than every source's full share of every
    // local expert: the capacity never exceeds that (with SWIPE at capacity 1 it is exactly R).
    const cap = Math.max(R, Math.min(this.capacity.fit(R), P * El * maxPerExpert));
    if (this.lastCap > 0 && cap !== this.lastCap) {
      // Where idle buffers of the old capacity were let go (none when another layer of this
      // step still holds them), the staging pair grows to the new bound now (as the first
      // exchange would), so that its old pair is dropped too, and one collection frees them
      // at once instead of leaving them beside the new capacity's until V8 collects them.
      if (forgetCapacity(m, this.lastCap) > 0) {
        const bound = stagingBound(cap, xp.shape[0]!, C);
        stagingPair(comm, bound, bound, bound);
        collectGarbage();
      }
    }
    this.lastCap = cap;
    this.stats.forwards++;
    this.stats.rowsReceived += R;
    this.stats.capacity = cap;
    const there = this.exchange(ranks, sendRows, recvRows, C, blocks, cap, xp.shape[0]!, 'out', nodeRows?.there, nodeRows?.back);
    const back = this.exchange(ranks, recvRows, sendRows, C, blocks, cap, xp.shape[0]!, 'in', nodeRows?.back, nodeRows?.there);
    const xl = allToAllV(xp, there);
    return allToAllV(local(xl, localCounts), back);
  }

  /**
   * An exchange of rows (send rows per rank → receive rows per rank) and its adjoint. The
   * side named by `localSide` ('out': what forward receives; 'in': what forward sends) is
   * in the local layout: `cap` rows grouped by local expert, placed by `blocks`, with zero
   * padding past the received rows. The other side is plain rows in rank order, `plainRows`
   * of them (the rows xp holds: past the dispatched ones they are zero padding, so that with
   * dropped assignments these buffers keep one size, nn/moe.ts).
   */
  private exchange(ranks: number[], send: number[], recv: number[], C: number, blocks: Int32Array, cap: number, plainRows: number, localSide: 'in' | 'out', nodeFwd?: Int32Array, nodeBwd?: Int32Array): RowExchange {
    const comm = this.o.comm, algo = this.o.a2a, nodeSize = this.o.nodeSize ?? comm.localWorldSize;
    const P = ranks.length, me = this.epRank;
    // The flat exchange leaves this rank's own share out: it goes from x to y in one copy
    // (through the exchange it took three: into staging, the collective's own copy, out of
    // staging). The hierarchical exchange's node counts include it, so it keeps the share.
    const skipOwn = !(algo === 'hierarchical' && nodeSize > 1 && nodeSize < P && P % nodeSize === 0);
    const go = (x: Tensor, s: number[], r: number[], localIn: boolean, nodeRows?: Int32Array): Tensor => {
      const t0 = performance.now();
      const nIn = s.reduce((a, v) => a + v, 0) * C, nOut = r.reduce((a, v) => a + v, 0) * C;
      // Rows before this rank's share on each side, and the share itself (s[me] = r[me]).
      let sBefore = 0, rBefore = 0;
      for (let p = 0; p < me; p++) { sBefore += s[p]!; rBefore += r[p]!; }
      const own = skipOwn ? s[me]! * C : 0;
      const sc = s.map((v, p) => (skipOwn && p === me ? 0 : v * C)), rc = r.map((v, p) => (skipOwn && p === me ? 0 : v * C));
      // One staging pair for every row exchange of every layer and direction: each exchange
      // completes (waitSync) and is copied out before the next starts. Both sides hold at most
      // max(cap, plainRows) rows, so the pair is sized by that bound when it must grow: it
      // then grows only with the capacity (geometric grid, held over a window), and holds
      // 2 · max(cap, plainRows) · C floats (what the planner prices, plan/ep-terms.ts).
      const [inp, out] = stagingPair(comm, nIn - own, nOut - own, stagingBound(cap, plainRows, C));
      const xd = x.data as Float32Array;
      let y: Tensor;
      if (localIn) {
        // Blocks are [local expert][source] (source = block index mod P); `from` counts rows
        // in source order, this rank's share sitting at sBefore in the send order and at
        // rBefore in y's (plain) order.
        y = empty([plainRows, C], 'float32');
        const yd = y.data as Float32Array;
        for (let i = 0, k = 0; i < blocks.length; i += 3, k++) {
          const at = x.offset + blocks[i + 1]! * C, n = blocks[i + 2]! * C, from = blocks[i]!;
          if (!n) continue;
          if (skipOwn && k % P === me) yd.set(xd.subarray(at, at + n), (rBefore + from - sBefore) * C);
          else inp.set(xd.subarray(at, at + n), (skipOwn && k % P > me ? from - s[me]! : from) * C);
        }
        comm.allToAllV(ranks, inp, sc, out, rc, algo, nodeSize, nodeRows);
        yd.set(out.subarray(0, rBefore * C));
        yd.set(out.subarray(rBefore * C, nOut - own), rBefore * C + own);
        yd.fill(0, nOut, plainRows * C);
      } else {
        inp.set(xd.subarray(x.offset, x.offset + sBefore * C));
        inp.set(xd.subarray(x.offset + sBefore * C + own, x.offset + nIn), sBefore * C);
        comm.allToAllV(ranks, inp, sc, out, rc, algo, nodeSize, nodeRows);
        y = empty([cap, C], 'float32');
        const yd = y.data as Float32Array;
        for (let i = 0, k = 0; i < blocks.length; i += 3, k++) {
          const n = blocks[i + 2]! * C, from = blocks[i]!;
          if (!n) continue;
          if (skipOwn && k % P === me) { const at = x.offset + (sBefore + from - rBefore) * C; yd.set(xd.subarray(at, at + n), blocks[i + 1]! * C); }
          else { const at = (skipOwn && k % P > me ? from - r[me]! : from) * C; yd.set(out.subarray(at, at + n), blocks[i + 1]! * C); }
        }
        yd.fill(0, nOut, cap * C);
      }
      this.stats.calls++;
      this.stats.rowsSent += nIn / C;
      this.stats.seconds += (performance.now() - t0) / 1000;
      return y;
    };
    // Dispatch ('out'): forward sends plain rows and receives local ones; backward the reverse.
    // Combine ('in'): forward sends local rows and receives plain ones; backward the reverse.
    return {
      group: `ep[${ranks.join(',')}]`,
      forward: (x) => go(x, send, recv, localSide === 'in', nodeFwd),
      backward: (g) => go(g, recv, send, localSide === 'out', nodeBwd),
    };
  }
}

/**
 * The row capacity moved from `cap` (grid capacities recur only after the window,
 * expert-parallel-capacity.ts): the buffer pool's idle buffers of the old capacity's sizes
 * (rows × each width of the expert MLP: received rows, hidden activations, their gradients)
 * go now. The pool's step rule would keep them idle through the next step beside the new
 * capacity's (moe-tiny dropless ep=2: tens of MiB at the peak); buffers of the old size still
 * in use are released later as one-off sizes and dropped at the step's end. Returns the bytes let go.
 */
function forgetCapacity(m: MoeMlp, cap: number): number {
  const w = m.experts.c_fc.weight.shape;
  let dropped = 0;
  for (const width of new Set([w[1]!, w[2]!])) dropped += pool.forget(cap * width);
  return dropped;
}

/** Floats each buffer of the staging pair holds when it must grow: both sides of an exchange hold at most max(cap, plainRows) rows. */
function stagingBound(cap: number, plainRows: number, C: number): number {
  return Math.max(cap, plainRows) * C;
}

/** The one staging pair of every row exchange (send side, receive side), grown to `bound` floats when too small. */
function stagingPair(comm: EpComm, nIn: number, nOut: number, bound: number): [Float32Array, Float32Array] {
  return [comm.shared('rows-in', nIn, 'f32', bound) as Float32Array, comm.shared('rows-out', nOut, 'f32', bound) as Float32Array];
}

/** dst[i] = (src ? src[from + i] : dst[i]) · s: the 1/dp scale of expert gradients (a plain loop, monomorphic). */
function scaleInto(dst: Float32Array, src: Float32Array | null, from: number, s: number): void {
  const n = dst.length;
  if (src) for (let i = 0; i < n; i++) dst[i] = src[from + i]! * s;
  else for (let i = 0; i < n; i++) dst[i] = dst[i]! * s;
}

/**
 * From the ep group's count matrix mat[src][dst·El + e] (rows per source rank, destination
 * rank and local expert): the element counts that the members of node `node` send to every
 * rank, for the dispatch direction (there: rows src → dst) and the combine direction (back:
 * the transpose), as nodeSize rows of P (what the hierarchical all-to-all needs).
 */
function nodeRowCounts(mat: Int32Array, P: number, El: number, C: number, nodeSize: number, node: number): { there: Int32Array; back: Int32Array } {
  const rows = (s: number, d: number) => { let n = 0; for (let e = 0; e < El; e++) n += mat[s * P * El + d * El + e]!; return n; };
  const there = new Int32Array(nodeSize * P), back = new Int32Array(nodeSize * P);
  for (let l = 0; l < nodeSize; l++) {
    const me = node * nodeSize + l;
    for (let d = 0; d < P; d++) { there[l * P + d] = rows(me, d) * C; back[l * P + d] = rows(d, me) * C; }
  }
  return { there, back };
}
