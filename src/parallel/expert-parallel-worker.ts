// The expert-parallel communication thread. Expert parallelism exchanges tokens inside
// forward and backward, which are synchronous (koffi GEMMs block the event loop), so the
// all-to-alls run here, on this thread's own connections, while the main thread blocks on
// Atomics.wait (expert-parallel-comm.ts). Requests run in arrival order, which every rank
// issues identically. Sub-groups (the ep group, the edp group, a node's ranks) are created
// on first use from their global rank lists; creation is local (no handshake).
import { parentPort, workerData } from 'node:worker_threads';
import { initProcessGroup, type InitOptions, type ProcessGroup } from '../runtime/init.js';
import type { Communicator, ReduceOp } from '../runtime/communicator.js';
import { hierarchicalAllToAllV } from './expert-parallel-a2a.js';

export type EpRequest = { id: number; ranks: number[] } & (
  | { op: 'allToAllV'; input: Float32Array | Int32Array; sendCounts: number[]; output: Float32Array | Int32Array; recvCounts: number[]; hierarchical: boolean; nodeSize: number }
  | { op: 'allReduce'; buf: Float32Array; reduce: ReduceOp }
  | { op: 'close' });

export interface EpWorkerData {
  init: InitOptions;
  /** [0] = requests completed, [1] = failed flag. */
  signal: Int32Array;
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
