// The expert-parallel communication thread. Expert parallelism exchanges tokens inside
// forward and backward, which are synchronous (koffi GEMMs block the event loop), so the
// all-to-alls run here, on this thread's own connections, while the main thread blocks on
// Atomics.wait (expert-parallel-comm.ts). Requests run in arrival order, which every rank
// issues identically. Sub-groups (the ep group, the edp group, a node's ranks) are created
// on first use from their global rank lists; creation is local (no handshake).
import { parentPort, workerData } from 'node:worker_threads';
import { initProcessGroup, type InitOptions, type ProcessGroup } from '../runtime/init.js';
import type { CommBuffer, Communicator, ReduceOp } from '../runtime/communicator.js';

export type EpRequest = { id: number; ranks: number[] } & (
  | { op: 'allToAllV'; input: Float32Array | Int32Array; sendCounts: number[]; output: Float32Array | Int32Array; recvCounts: number[]; hierarchical: boolean; nodeSize: number }
  | { op: 'allReduce'; buf: Float32Array; reduce: ReduceOp }
  | { op: 'close' });

export interface EpWorkerData {
  init: InitOptions;
  /** [0] = requests completed, [1] = failed flag. */
  signal: Int32Array;
}

/**
 * Hierarchical all-to-all-v (BaGuaLu / FasterMoE): ranks are grouped into nodes of
 * `nodeSize` consecutive members. Phase 1, inside each node: local rank l sends local peer
 * l' everything it has for local index l' of every node. Phase 2, between nodes: (n, l')
 * sends (m, l') the node-aggregated data for it: one message per node pair and local
 * index instead of nodeSize² small ones. Pure data movement, so the result equals the flat
 * exchange bit for bit. `counts` is the full send-count matrix (row = source).
 */
async function hierarchicalAllToAllV(g: Communicator, sub: (ranks: number[]) => Communicator, input: CommBuffer, sendCounts: number[], output: CommBuffer, nodeSize: number): Promise<void> {
  const P = g.size;
  if (P % nodeSize !== 0) throw new Error(`hierarchical all-to-all: group of ${P} ranks does not split into nodes of ${nodeSize}`);
  const nodes = P / nodeSize;
  const me = g.rank, myNode = Math.floor(me / nodeSize), myLocal = me % nodeSize;
  const mat = new Int32Array(P * P);
  await g.allGather(Int32Array.from(sendCounts), mat).wait();
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
  await sub(nodeRanks).allToAllV(p1In, p1Send, p1Out, p1Recv).wait();
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
  await sub(crossRanks).allToAllV(p2In, p2Send, output, p2Recv).wait();
}

async function main(): Promise<void> {
  const port = parentPort!;
  const { init, signal } = workerData as EpWorkerData;
  const world: ProcessGroup = await initProcessGroup(init);
  const groups = new Map<string, Communicator>();
  const sub = (ranks: number[]): Communicator => {
    if (ranks.length === world.size && ranks.every((r, i) => r === i)) return world;
    const k = ranks.join(',');
    let g = groups.get(k);
    if (!g) { g = world.newGroup(ranks, `ep-thread[${k}]`); groups.set(k, g); }
    return g;
  };
  port.postMessage({ type: 'ready', rank: world.rank, size: world.size, localWorldSize: world.localWorldSize });
  const queue: EpRequest[] = [];
  let running = false;
  const pump = async () => {
    if (running) return;
    running = true;
    while (queue.length) {
      const r = queue.shift()!;
      try {
        switch (r.op) {
          case 'allToAllV': {
            const g = sub(r.ranks);
            if (r.hierarchical && r.nodeSize > 1 && r.nodeSize < g.size) await hierarchicalAllToAllV(g, sub, r.input, r.sendCounts, r.output, r.nodeSize);
            else await g.allToAllV(r.input, r.sendCounts, r.output, r.recvCounts).wait();
            break;
          }
          case 'allReduce': await sub(r.ranks).allReduce(r.buf, { op: r.reduce, deterministic: true }).wait(); break;
          case 'close': await world.destroy(); break;
        }
        Atomics.add(signal, 0, 1);
        Atomics.notify(signal, 0);
        port.postMessage({ type: 'done', id: r.id });
        if (r.op === 'close') { port.close(); return; }
      } catch (e) {
        Atomics.store(signal, 1, 1);
        Atomics.add(signal, 0, 1);
        Atomics.notify(signal, 0);
        port.postMessage({ type: 'error', id: r.id, message: (e as Error).message });
      }
    }
    running = false;
  };
  port.on('message', (r: EpRequest) => {
    queue.push(r);
    void pump();
  });
}

main().catch((e: unknown) => {
  parentPort?.postMessage({ type: 'fatal', message: (e as Error).message });
});
