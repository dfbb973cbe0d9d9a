// Hierarchical all-to-all-v over any Communicator (used by the expert-parallel
// communication thread and by bench/moe-bench.ts).
//
// Cost model, why it is shaped this way: on a loaded host every collective step that waits
// for another process costs a scheduling round trip, so the number of dependent steps
// matters as much as the bytes. The flat exchange is one step. This one is two (inside the
// node, then between nodes) plus, when the caller does not know them, one step inside the
// node to learn the node members' send counts: never a collective over all ranks (a ring
// all-gather of the full count matrix was P−1 dependent cross-node steps and dominated the
// exchange: 11 MB/s against flat's 215 MB/s at 4 ranks).
import type { CommBuffer, Communicator, Work } from '../runtime/communicator.js';

/** Scratch buffers: the caller may hand out reusable (e.g. shared) memory; default: fresh arrays. */
export type A2aAlloc = (slot: string, n: number, like: CommBuffer) => CommBuffer;

export interface HierarchicalA2a {
  /** Ranks per node: members [k·nodeSize, (k+1)·nodeSize) of the group share node k. */
  nodeSize: number;
  /**
   * The send counts of every member of this rank's node (nodeSize rows of P, row = local
   * index, element = count for each destination), when the caller already has them (expert
   * parallelism exchanges its count matrix once per layer); otherwise one all-gather inside
   * the node fetches them.
   */
  nodeSendCounts?: Int32Array;
  alloc?: A2aAlloc;
}

/**
 * Hierarchical all-to-all-v (BaGuaLu / FasterMoE). Phase 1, inside each node: local rank l
 * sends local peer l' everything it has for local index l' of every node. Phase 2, between
 * nodes: (n, l') sends (m, l') the node-aggregated data for it: one message per node pair and
 * local index instead of nodeSize² small ones. Pure data movement, so the result equals the
 * flat exchange bit for bit. Arguments as Communicator.allToAllV.
 */
export async function hierarchicalAllToAllV(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[], o: HierarchicalA2a): Promise<void> {
  for (const w of hierarchicalSteps(g, sub, input, sendCounts, output, recvCounts, o)) await w.wait();
}

/** The same exchange for synchronous callers (a communication thread's waitSync). */
export function hierarchicalAllToAllVSync(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[], o: HierarchicalA2a, waitSync: (w: Work) => void): void {
  for (const w of hierarchicalSteps(g, sub, input, sendCounts, output, recvCounts, o)) waitSync(w);
}

const fresh: A2aAlloc = (_slot, n, like) => new (like.constructor as new (n: number) => CommBuffer)(n);

/** The collectives of the exchange; the caller completes each yielded Work before resuming. */
function* hierarchicalSteps(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[], o: HierarchicalA2a): Generator<Work, void, void> {
  const P = g.size, nodeSize = o.nodeSize, alloc = o.alloc ?? fresh;
  if (P % nodeSize !== 0) throw new Error(`hierarchical all-to-all: group of ${P} ranks does not split into nodes of ${nodeSize}`);
  if (sendCounts.length !== P || recvCounts.length !== P) throw new Error(`hierarchical all-to-all: ${sendCounts.length} send / ${recvCounts.length} receive counts for ${P} ranks`);
  const nodes = P / nodeSize;
  const me = g.rank, myNode = Math.floor(me / nodeSize), myLocal = me % nodeSize;
  const nodeRanks = Array.from({ length: nodeSize }, (_, l) => g.ranks[myNode * nodeSize + l]!);
  const nodeComm = sub(nodeRanks);
  let rows = o.nodeSendCounts;
  if (!rows) {
    rows = new Int32Array(nodeSize * P);
    yield nodeComm.allGather(Int32Array.from(sendCounts), rows);
  } else if (rows.length !== nodeSize * P) {
    throw new Error(`hierarchical all-to-all: nodeSendCounts has ${rows.length} entries, expected nodeSize·P = ${nodeSize}·${P}`);
  }
  /** Count from local member l of this node to group rank d. */
  const cnt = (l: number, d: number) => rows![l * P + d]!;
  // Offsets of each destination block in this rank's input.
  const inOff = new Array<number>(P + 1).fill(0);
  for (let d = 0; d < P; d++) inOff[d + 1] = inOff[d]! + sendCounts[d]!;
  // Phase 1 send to local peer l': blocks for destinations (m, l'), m = 0..nodes-1.
  const p1Send: number[] = [], p1Recv: number[] = [];
  const p1In = alloc('h1-in', inOff[P]!, input);
  let off = 0;
  for (let l = 0; l < nodeSize; l++) {
    let n1 = 0;
    for (let m = 0; m < nodes; m++) {
      const d = m * nodeSize + l;
      p1In.set(input.subarray(inOff[d]!, inOff[d + 1]!) as never, off);
      off += sendCounts[d]!;
      n1 += sendCounts[d]!;
    }
    p1Send.push(n1);
    let r1 = 0;
    for (let m = 0; m < nodes; m++) r1 += cnt(l, m * nodeSize + myLocal);
    p1Recv.push(r1);
  }
  const p1Out = alloc('h1-out', p1Recv.reduce((a, b) => a + b, 0), input);
  yield nodeComm.allToAllV(p1In, p1Send, p1Out, p1Recv);
  // p1Out = [from local l][for node m] blocks. Phase 2 send to (m, myLocal): [from l] blocks for it.
  const p1Off: number[][] = [];
  off = 0;
  for (let l = 0; l < nodeSize; l++) {
    const row: number[] = [];
    for (let m = 0; m < nodes; m++) { row.push(off); off += cnt(l, m * nodeSize + myLocal); }
    p1Off.push(row);
  }
  const p2Send: number[] = [], p2Recv: number[] = [];
  const p2In = alloc('h2-in', p1Out.length, input);
  off = 0;
  for (let m = 0; m < nodes; m++) {
    let n2 = 0;
    const d = m * nodeSize + myLocal;
    for (let l = 0; l < nodeSize; l++) {
      const c = cnt(l, d), from = p1Off[l]![m]!;
      p2In.set(p1Out.subarray(from, from + c) as never, off);
      off += c;
      n2 += c;
    }
    p2Send.push(n2);
    let r2 = 0;
    for (let l = 0; l < nodeSize; l++) r2 += recvCounts[m * nodeSize + l]!;
    p2Recv.push(r2);
  }
  const crossRanks = Array.from({ length: nodes }, (_, m) => g.ranks[m * nodeSize + myLocal]!);
  // p2Out = [from node m][from local l] = source rank order: exactly the flat layout.
  yield sub(crossRanks).allToAllV(p2In, p2Send, output, p2Recv);
}
