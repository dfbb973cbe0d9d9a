// Communication thread. Gradient collectives run here, on their own connections
// and event loop, so they progress while the main thread is inside a synchronous
// backward pass (koffi GEMM calls block the main event loop). Requests execute in
// the order received, which every rank issues identically.
import { parentPort, workerData } from 'node:worker_threads';
import { initProcessGroup, type InitOptions } from './init.js';
import type { CommBuffer, ReduceOp } from './communicator.js';

export type CommRequest =
  | { id: number; op: 'allReduce'; buf: CommBuffer; reduce: ReduceOp; deterministic?: boolean }
  | { id: number; op: 'reduceScatterV'; input: CommBuffer; output: CommBuffer; counts: number[]; reduce: ReduceOp }
  | { id: number; op: 'allGatherV'; input: CommBuffer; output: CommBuffer; counts: number[] }
  | { id: number; op: 'barrier' }
  | { id: number; op: 'close' };

export interface CommWorkerData {
  init: InitOptions;
  /** Int32Array over a SharedArrayBuffer: [0] = requests completed, [1] = failed flag. */
  signal: Int32Array;
  /** Global ranks of the sub-group the thread's collectives run over (default: the whole world). */
  group?: number[];
}

async function main(): Promise<void> {
  const port = parentPort!;
  const { init, signal, group } = workerData as CommWorkerData;
  const world = await initProcessGroup(init);
  const pg = group && group.length !== world.size ? world.newGroup(group, 'comm-thread') : world;
  port.postMessage({ type: 'ready', rank: pg.rank, size: pg.size, backend: pg.backend });
  const queue: CommRequest[] = [];
  let running = false;
  const pump = async () => {
    if (running) return;
    running = true;
    while (queue.length) {
      const r = queue.shift()!;
      try {
        switch (r.op) {
          case 'allReduce': await pg.allReduce(r.buf, { op: r.reduce, deterministic: r.deterministic ?? true }).wait(); break;
          case 'reduceScatterV': await pg.reduceScatterV(r.input, r.output, r.counts, r.reduce).wait(); break;
          case 'allGatherV': await pg.allGatherV(r.input, r.output, r.counts).wait(); break;
          case 'barrier': await pg.barrier().wait(); break;
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
  port.on('message', (r: CommRequest) => {
    queue.push(r);
    void pump();
  });
}

main().catch((e: unknown) => {
  parentPort?.postMessage({ type: 'fatal', message: (e as Error).message });
});
