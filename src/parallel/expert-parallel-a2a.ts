// Hierarchical all-to-all-v over any Communicator (used by the expert-parallel
// communication thread and by bench/moe-bench.ts).
import type { CommBuffer, Communicator, Work } from '../runtime/communicator.js';

/**
 * Hierarchical all-to-all-v (BaGuaLu / FasterMoE): ranks are grouped into nodes of
 * `nodeSize` consecutive members. Phase 1, inside each node: local rank l sends local peer
 * l' everything it has for local index l' of every node. Phase 2, between nodes: (n, l')
 * sends (m, l') the node-aggregated data for it: one message per node pair and local
 * index instead of nodeSize² small ones. Pure data movement, so the result equals the flat
 * exchange bit for bit. `counts` is the full send-count matrix (row = source).
 */
export async function hierarchicalAllToAllV(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: number[], output: CommBuffer, nodeSize: number): Promise<void> {
  for (const w of hierarchicalSteps(g, sub, input, sendCounts, output, nodeSize)) await w.wait();
}

/** The same exchange for synchronous callers (a communication thread's waitSync). */
export function hierarchicalAllToAllVSync(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: number[], output: CommBuffer, nodeSize: number, waitSync: (w: Work) => void): void {
  for (const w of hierarchicalSteps(g, sub, input, sendCounts, output, nodeSize)) waitSync(w);
}

/** The three collectives of the exchange; the caller completes each yielded Work before resuming. */
function* hierarchicalSteps(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: number[], output: CommBuffer, nodeSize: number): Generator<Work, void, void> {
  const P = g.size;
  if (P % nodeSize !== 0) throw new Error(`hierarchical all-to-all: group of ${P} ranks does not split into nodes of ${nodeSize}`);
  const nodes = P / nodeSize;
  const me = g.rank, myNode = Math.floor(me / nodeSize), myLocal = me % nodeSize;
  const mat = new Int32Array(P * P);
  yield g.allGather(Int32Array.from(sendCounts), mat);
  const cnt = (s: number, d: number) => mat[s * P + d]!;
  const Ctor = input.constructor as new (n: number) => CommBuffer;
  // Offsets of each destination block in this rank's input.
  const inOff = new Array<number>(P + 1).fill(0);
  for (let d = 0; d < P; d++) inOff[d + 1] = inOff[d]! + cnt(me, d);
  // Phase 1 send to local peer l': blocks for destinations (m, l'), m = 0..nodes-1.
  const p1Send: number[] = [], p1Recv: number[] = [];
  const p1In = new Ctor(input.length);
  let o = 0;
  for (let l = 0; l < nodeSize; l++) {
    let n1 = 0;
    for (let m = 0; m < nodes; m++) {
      const d = m * nodeSize + l;
      p1In.set(input.subarray(inOff[d]!, inOff[d + 1]!) as never, o);
      o += cnt(me, d);
      n1 += cnt(me, d);
    }
    p1Send.push(n1);
    let r1 = 0;
    const src = myNode * nodeSize + l;
    for (let m = 0; m < nodes; m++) r1 += cnt(src, m * nodeSize + myLocal);
    p1Recv.push(r1);
  }
  const nodeRanks = Array.from({ length: nodeSize }, (_, l) => g.ranks[myNode * nodeSize + l]!);
  const p1Out = new Ctor(p1Recv.reduce((a, b) => a + b, 0));
  yield sub(nodeRanks).allToAllV(p1In, p1Send, p1Out, p1Recv);
  // p1Out = [from local l][for node m] blocks. Phase 2 send to (m, myLocal): [from l] blocks for it.
  const p1Off: number[][] = [];
  o = 0;
  for (let l = 0; l < nodeSize; l++) {
    const row: number[] = [];
    for (let m = 0; m < nodes; m++) { row.push(o); o += cnt(myNode * nodeSize + l, m * nodeSize + myLocal); }
    p1Off.push(row);
  }
  const p2Send: number[] = [], p2Recv: number[] = [];
  const p2In = new Ctor(p1Out.length);
  o = 0;
  for (let m = 0; m < nodes; m++) {
    let n2 = 0;
    const d = m * nodeSize + myLocal;
    for (let l = 0; l < nodeSize; l++) {
      const s = myNode * nodeSize + l, c = cnt(s, d), from = p1Off[l]![m]!;
      p2In.set(p1Out.subarray(from, from + c) as never, o);
      o += c;
      n2 += c;
    }
    p2Send.push(n2);
    let r2 = 0;
    for (let l = 0; l < nodeSize; l++) r2 += cnt(m * nodeSize + l, me);
    p2Recv.push(r2);
  }
  const crossRanks = Array.from({ length: nodes }, (_, m) => g.ranks[m * nodeSize + myLocal]!);
  // p2Out = [from node m][from local l] = source rank order: exactly the flat layout.
  yield sub(crossRanks).allToAllV(p2In, p2Send, output, p2Recv);
}

