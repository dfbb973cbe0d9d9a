// Communication thread. Collectives and sends/receives posted by the main thread
// (comm-thread.ts) run here, on their own connections, so they progress while the main
// thread is inside a synchronous backward pass (koffi GEMM calls block the main event
// loop). Requests are issued in the order received (every rank posts its collectives in
// the same order) and complete in any order, so point-to-point exchanges and collectives of
// different groups overlap.
//
// Two modes:
//  - sockets: the thread joins its own process group through the job's store (event-driven);
//  - mpi: the thread drives non-blocking MPI on duplicates of MPI_COMM_WORLD that the main
//    thread made for it (mpi-engine.ts), in a polling loop that reads requests with
//    receiveMessageOnPort.
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { initProcessGroup, type InitOptions } from './init.js';
import type { AllReduceOptions, CommBuffer, Communicator, ReduceOp } from './communicator.js';
import { MpiEngine, EngineGroup, type Done } from './mpi-engine.js';
import { mpiInit } from './mpi.js';

export type CommRequest = { id: number; g: number } & (
  | { op: 'allReduce'; buf: CommBuffer; reduce: ReduceOp; algorithm?: AllReduceOptions['algorithm']; deterministic?: boolean }
  | { op: 'reduceScatterV'; input: CommBuffer; output: CommBuffer; counts: number[]; reduce: ReduceOp }
  | { op: 'allGatherV'; input: CommBuffer; output: CommBuffer; counts: number[] }
  | { op: 'broadcast'; buf: CommBuffer; root: number }
  | { op: 'allToAllV'; input: CommBuffer; sendCounts: number[]; output: CommBuffer; recvCounts: number[] }
  | { op: 'send'; buf: CommBuffer; peer: number; tag: number }
  | { op: 'recv'; buf: CommBuffer; peer: number; tag: number }
  | { op: 'barrier' }
  | { op: 'newGroup'; ranks: number[]; name: string; newId: number }
  | { op: 'close' });

export type CommReply =
  | { type: 'ready'; rank: number; size: number; backend: string }
  | { type: 'done'; id: number }
  /** fatal: the group (or thread) is broken, not only this request's arguments. */
  | { type: 'error'; id: number; message: string; fatal: boolean }
  | { type: 'fatal'; message: string };

export type CommWorkerData = {
  port: MessagePort;
  /** [0] requests posted (main bumps it), [1] replies sent (worker bumps it). */
  bell: Int32Array;
  worldId: number;
} & ({ mode: 'socket'; init: InitOptions } | { mode: 'mpi'; comm: bigint; statusComm: bigint; watchdogS: number });

const data = workerData as CommWorkerData;
/**
 * Milliseconds the MPI loop keeps polling after the last completion or post before it sleeps
 * (env ATHANOR_MPI_SPIN_MS). Short on purpose: mpirun binds a rank's threads to one core by
 * default, where a spinning communication thread takes time from the compute thread and from
 * the main thread's handling of its replies (on the loaded 2-core dev box, spinning for 1 s
 * made a 1 MiB allreduce ~25x slower than 0.2 ms did).
 */
const SPIN_MS = Number(process.env.ATHANOR_MPI_SPIN_MS ?? 0.2);
const port = data.port;
const bell = data.bell;

function reply(m: CommReply): void {
  port.postMessage(m);
  Atomics.add(bell, 1, 1);
  Atomics.notify(bell, 1);
}

async function socketMode(init: InitOptions): Promise<void> {
  const world = await initProcessGroup(init);
  const groups = new Map<number, Communicator>([[data.worldId, world]]);
  reply({ type: 'ready', rank: world.rank, size: world.size, backend: world.backend });
  port.on('message', (r: CommRequest) => {
    const g = groups.get(r.g);
    let w: PromiseLike<void>;
    try {
      if (!g) throw new Error(`unknown group id ${r.g}`);
      switch (r.op) {
        case 'allReduce': w = g.allReduce(r.buf, { op: r.reduce, algorithm: r.algorithm, deterministic: r.deterministic ?? true }); break;
        case 'reduceScatterV': w = g.reduceScatterV(r.input, r.output, r.counts, r.reduce); break;
        case 'allGatherV': w = g.allGatherV(r.input, r.output, r.counts); break;
        case 'broadcast': w = g.broadcast(r.buf, r.root); break;
        case 'allToAllV': w = g.allToAllV(r.input, r.sendCounts, r.output, r.recvCounts); break;
        case 'send': w = g.send(r.buf, r.peer, r.tag); break;
        case 'recv': w = g.recv(r.buf, r.peer, r.tag); break;
        case 'barrier': w = g.barrier(); break;
        case 'newGroup': groups.set(r.newId, g.newGroup(r.ranks, r.name)); w = Promise.resolve(); break;
        case 'close':
          w = world.destroy().then(() => { reply({ type: 'done', id: r.id }); port.close(); });
          return;
      }
    } catch (e) {
      reply({ type: 'error', id: r.id, message: (e as Error).message, fatal: false });
      return;
    }
    w.then(() => reply({ type: 'done', id: r.id }), (e: Error) => reply({ type: 'error', id: r.id, message: e.message, fatal: true }));
  });
}

function mpiMode(comm: bigint, statusComm: bigint, watchdogS: number): void {
  // MPI is already initialised (by the main thread, with MPI_THREAD_MULTIPLE).
  const { rank, size } = mpiInit();
  const engine = new MpiEngine(rank, statusComm, watchdogS);
  new EngineGroup(engine, data.worldId, [...Array(size).keys()], 'world', comm);
  reply({ type: 'ready', rank, size, backend: 'mpi' });
  let seen = 0, lastEvent = performance.now();
  for (;;) {
    let closing: number | null = null;
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
      const r = m.message as CommRequest;
      if (r.op === 'close') { closing = r.id; break; }
      const done: Done = (err) => reply(err ? { type: 'error', id: r.id, message: err.message, fatal: true } : { type: 'done', id: r.id });
      try {
        const g = engine.groups.get(r.g);
        if (!g) throw new Error(`unknown group id ${r.g}`);
        switch (r.op) {
          case 'allReduce': g.allReduce(r.buf, r.reduce, done); break;
          case 'reduceScatterV': g.reduceScatterV(r.input, r.output, r.counts, r.reduce, done); break;
          case 'allGatherV': g.allGatherV(r.input, r.output, r.counts, done); break;
          case 'broadcast': g.broadcast(r.buf, r.root, done); break;
          case 'allToAllV': g.allToAllV(r.input, r.sendCounts, r.output, r.recvCounts, done); break;
          case 'send': g.send(r.buf, r.peer, r.tag, done); break;
          case 'recv': g.recv(r.buf, r.peer, r.tag, done); break;
          case 'barrier': g.barrier(done); break;
          case 'newGroup': g.newGroup(r.ranks, r.name, r.newId); done(null); break;
        }
      } catch (e) {
        reply({ type: 'error', id: r.id, message: (e as Error).message, fatal: false });
      }
    }
    if (closing !== null) {
      // Everything posted before the close must finish first.
      while (engine.ops.length) { engine.poll(); if (engine.ops.length) Atomics.wait(bell, 0, Atomics.load(bell, 0), 0.05); }
      engine.shutdown();
      reply({ type: 'done', id: closing });
      port.close();
      return;
    }
    const progressed = engine.poll();
    const posts = Atomics.load(bell, 0);
    const now = performance.now();
    if (progressed || posts !== seen) { lastEvent = now; seen = posts; continue; }
    // Nothing completed: Open MPI moves a large message's fragments only inside our calls, so
    // keep polling for SPIN_MS after the last event, then sleep in growing steps (woken at
    // once when a request is posted). Idle, it still wakes every 10 ms to answer the other
    // ranks' watchdog queries.
    const quiet = now - lastEvent;
    if (engine.ops.length && quiet < SPIN_MS) continue;
    const ms = engine.ops.length ? Math.min(0.2, 0.01 * 2 ** Math.min(5, Math.floor((quiet - SPIN_MS) / 2))) : 10;
    Atomics.wait(bell, 0, posts, ms);
  }
}

if (data.mode === 'socket') {
  socketMode(data.init).catch((e: unknown) => reply({ type: 'fatal', message: (e as Error).message }));
} else {
  try { mpiMode(data.comm, data.statusComm, data.watchdogS); }
  catch (e) { reply({ type: 'fatal', message: (e as Error).message }); }
}
