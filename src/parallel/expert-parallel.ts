// Expert parallelism, applied to a plain MoE model from outside (the model never imports
// this). The E experts of every MoE layer are sharded over the P ranks of an ep group:
// rank p holds experts [p·E/P, (p+1)·E/P). Routing stays local; the expert-grouped rows
// (already contiguous per expert, so per destination rank) travel with all-to-all-v:
//
//   xp (S, C) grouped by global expert ─allToAllV→ rows [source rank][local expert]
//   ─moeDispatch (regroup)→ [local expert][source rank] ─grouped GEMM MLP→
//   ─moeDispatch (un-regroup)→ [source rank][local expert] ─allToAllV→ (S, C) as xp
//
// Both exchanges and both regroupings are ops on the tape, so backward runs the adjoint
// exchanges. Expert gradients are reduced over the expert-data-parallel group (ranks that
// hold the same experts); dense gradients over the whole data-parallel group.
import { empty, type Tensor } from '../core/tensor.js';
import type { MoeMlp } from '../nn/moe.js';
import type { ShardRequest } from '../nn/materialize.js';
import { allToAllV, moeDispatch, type RowExchange } from '../ops/moe.js';
import type { A2aAlgorithm, EpComm } from './expert-parallel-comm.js';

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
export interface ExchangeStats { calls: number; rowsSent: number; seconds: number }

export class ExpertParallel {
  readonly epSize: number;
  readonly epRank: number;
  readonly stats: ExchangeStats = { calls: 0, rowsSent: 0, seconds: 0 };

  constructor(readonly model: ExpertModel, readonly o: ExpertParallelOptions) {
    this.epSize = o.epRanks.length;
    this.epRank = o.epRanks.indexOf(o.comm.rank);
    if (this.epRank < 0) throw new Error(`expert parallel: rank ${o.comm.rank} is not in its ep group [${o.epRanks.join(',')}]`);
    for (const m of model.moeLayers()) {
      const El = m.experts.count, E = m.cfg.experts;
      if (El * this.epSize !== E) {
        throw new Error(`expert parallel: rank ${o.comm.rank} holds ${El} of ${E} experts but parallel.ep = ${this.epSize}; build the model with expertShard()`);
      }
      m.expertRunner = (xp, counts, local) => this.run(m, xp, counts, local);
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
        const g = (p.grad.data as Float32Array).subarray(p.grad.offset, p.grad.offset + p.size);
        for (let i = 0; i < p.size; i++) g[i] = g[i]! * s;
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
      const g = (p.grad.data as Float32Array).subarray(p.grad.offset, p.grad.offset + p.size);
      for (let i = 0; i < p.size; i++) g[i] = buf[o + i]! * s;
      o += p.size;
    }
  }

  private run(m: MoeMlp, xp: Tensor, counts: Int32Array, local: (x: Tensor, counts: Int32Array) => Tensor): Tensor {
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
    // 2. Regrouping [source][local expert] → [local expert][source] and back.
    const localCounts = new Int32Array(El);
    const blockStart = new Int32Array(P * El);
    let o = 0;
    for (let p = 0; p < P; p++) for (let e = 0; e < El; e++) { blockStart[p * El + e] = o; o += recvCnt[p * El + e]!; }
    const order = new Int32Array(R), inverse = new Int32Array(R);
    let w = 0;
    for (let e = 0; e < El; e++) {
      for (let p = 0; p < P; p++) {
        const n = recvCnt[p * El + e]!, b = blockStart[p * El + e]!;
        for (let i = 0; i < n; i++) { order[w] = b + i; inverse[b + i] = w; w++; }
        localCounts[e]! += n;
      }
    }
    const there = this.exchange(ranks, sendRows, recvRows, C, nodeRows?.there, nodeRows?.back);
    const back = this.exchange(ranks, recvRows, sendRows, C, nodeRows?.back, nodeRows?.there);
    const xr = allToAllV(xp, there);
    const yl = local(moeDispatch(xr, order), localCounts);
    return allToAllV(moeDispatch(yl, inverse), back);
  }

  /** An exchange of rows (send rows per rank → receive rows per rank) and its adjoint. */
  private exchange(ranks: number[], send: number[], recv: number[], C: number, nodeFwd?: Int32Array, nodeBwd?: Int32Array): RowExchange {
    const comm = this.o.comm, algo = this.o.a2a, nodeSize = this.o.nodeSize ?? comm.localWorldSize;
    const go = (x: Tensor, s: number[], r: number[], nodeRows?: Int32Array): Tensor => {
      const t0 = performance.now();
      const nIn = s.reduce((a, b) => a + b, 0) * C, nOut = r.reduce((a, b) => a + b, 0) * C;
      // One staging pair for every row exchange of every layer and direction: each exchange
      // completes (waitSync) and is copied out before the next starts.
      const inp = comm.shared('rows-in', nIn) as Float32Array, out = comm.shared('rows-out', nOut) as Float32Array;
      inp.set((x.data as Float32Array).subarray(x.offset, x.offset + nIn));
      comm.allToAllV(ranks, inp, s.map((v) => v * C), out, r.map((v) => v * C), algo, nodeSize, nodeRows);
      const y = empty([nOut / C, C], 'float32');
      (y.data as Float32Array).set(out);
      this.stats.calls++;
      this.stats.rowsSent += nIn / C;
      this.stats.seconds += (performance.now() - t0) / 1000;
      return y;
    };
    return {
      group: `ep[${ranks.join(',')}]`,
      forward: (x) => go(x, send, recv, nodeFwd),
      backward: (g) => go(g, recv, send, nodeBwd),
    };
  }
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
