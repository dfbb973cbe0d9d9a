// The communication expert parallelism needs: all-to-all-v and all-reduce that block until
// done, because tokens are exchanged inside forward and backward (synchronous code). They run
// on the runtime's communication thread (sockets, or MPI under mpirun) and are waited for with
// waitSync. Buffers live in reused, grow-only SharedArrayBuffers so the thread uses them in place
// (the row exchanges size theirs from the row capacity, expert-parallel.ts).
import type { CommBuffer, ReduceOp } from '../runtime/communicator.js';
import type { ProcessGroup } from '../runtime/init.js';
import { CommThread, type ThreadComm } from '../runtime/comm-thread.js';
import { hierarchicalAllToAllVSync } from './expert-parallel-a2a.js';
import { SHARED_GROWTH } from './expert-parallel-capacity.js';

export type A2aAlgorithm = 'flat' | 'hierarchical';

/** What expert parallelism needs: blocking all-to-all-v and all-reduce over groups of global ranks. */
export interface EpComm {
  readonly rank: number;
  /** Ranks per node (consecutive global ranks share a node), for the hierarchical all-to-all. */
  readonly localWorldSize: number;
  /** `reserve` (≥ n): the size to grow to when the slot must grow (a bound the caller knows), instead of SHARED_GROWTH × n. */
  shared(slot: string, n: number, kind?: 'f32' | 'i32', reserve?: number): Float32Array | Int32Array;
  /**
   * `nodeSendCounts` (hierarchical only): the send counts of every member of this rank's
   * node, nodeSize rows of P, when the caller knows them (saves a step inside the node).
   */
  allToAllV(ranks: number[], input: Float32Array | Int32Array, sendCounts: number[], output: Float32Array | Int32Array, recvCounts: number[], algo?: A2aAlgorithm, nodeSize?: number, nodeSendCounts?: Int32Array): void;
  /** output (ranks.length × input.length) = every member's input, in ranks order. */
  allGather(ranks: number[], input: Int32Array, output: Int32Array): void;
  allReduce(ranks: number[], buf: Float32Array, reduce?: ReduceOp): void;
  close(): Promise<void>;
}

/** Grow-only shared buffers by slot name (reused across exchanges; data is copied out at once). */
class SharedPool {
  private readonly pools = new Map<string, SharedArrayBuffer>();
  get(slot: string, n: number, kind: 'f32' | 'i32', reserve?: number): Float32Array | Int32Array {
    let sab = this.pools.get(slot);
    if (!sab || sab.byteLength < n * 4) { sab = new SharedArrayBuffer(Math.max(64, (reserve !== undefined && reserve >= n ? reserve : Math.ceil(n * SHARED_GROWTH)) * 4)); this.pools.set(slot, sab); }
    return kind === 'f32' ? new Float32Array(sab, 0, n) : new Int32Array(sab, 0, n);
  }
}

/**
 * EpComm over the runtime's communication thread (a Communicator with sub-groups and
 * waitSync; MPI under mpirun, sockets otherwise). Groups are created on first use, in
 * the same order on every member.
 */
export class ThreadEpComm implements EpComm {
  private readonly groups = new Map<string, ThreadComm>();
  private readonly pool = new SharedPool();
  constructor(private readonly thread: CommThread, readonly rank: number, readonly localWorldSize: number) {}

  static async start(pg: ProcessGroup): Promise<ThreadEpComm> {
    return new ThreadEpComm(await CommThread.start(pg, { prefix: 'athanor/ep' }), pg.rank, pg.localWorldSize);
  }

  private group(ranks: number[]): ThreadComm {
    const k = ranks.join(',');
    let g = this.groups.get(k);
    if (!g) { g = this.thread.newGroup(ranks, `ep[${k}]`); this.groups.set(k, g); }
    return g;
  }

  shared(slot: string, n: number, kind: 'f32' | 'i32' = 'f32', reserve?: number): Float32Array | Int32Array {
    return this.pool.get(slot, n, kind, reserve);
  }

  allToAllV(ranks: number[], input: Float32Array | Int32Array, sendCounts: number[], output: Float32Array | Int32Array, recvCounts: number[], algo: A2aAlgorithm = 'flat', nodeSize = this.localWorldSize, nodeSendCounts?: Int32Array): void {
    const g = this.group(ranks);
    if (algo === 'hierarchical' && nodeSize > 1 && nodeSize < g.size && g.size % nodeSize === 0) {
      // Scratch in the shared pool: the communication thread uses it in place (no staging copies).
      const alloc = (slot: string, n: number, like: CommBuffer) => this.pool.get(slot, n, like instanceof Int32Array ? 'i32' : 'f32');
      hierarchicalAllToAllVSync(g, (r) => this.group(r), input, sendCounts, output, recvCounts, { nodeSize, ...(nodeSendCounts ? { nodeSendCounts } : {}), alloc }, (w) => g.waitSync(w));
    } else {
      g.waitSync(g.allToAllV(input, sendCounts, output, recvCounts));
    }
  }

  allGather(ranks: number[], input: Int32Array, output: Int32Array): void {
    const g = this.group(ranks);
    g.waitSync(g.allGather(input, output));
  }

  allReduce(ranks: number[], buf: Float32Array, reduce: ReduceOp = 'sum'): void {
    const g = this.group(ranks);
    g.waitSync(g.allReduce(buf, { op: reduce, deterministic: true }));
  }

  async close(): Promise<void> {
    await this.thread.close();
  }
}
