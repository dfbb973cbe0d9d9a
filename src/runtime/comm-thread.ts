// Main-thread handle on the communication worker (comm-worker.ts). Collectives are
// posted to the worker and complete there while this thread keeps computing:
// `start()` returns a promise for use at await points, `waitSync()` blocks with
// Atomics.wait for use inside synchronous code (ZeRO-3 gathers inside backward).
// Buffers must live in SharedArrayBuffers so both threads see the same memory.
import { Worker } from 'node:worker_threads';
import type { CommBuffer, ReduceOp } from './communicator.js';
import type { CommRequest, CommWorkerData } from './comm-worker.js';
import type { InitOptions } from './init.js';

type Pending = { resolve: () => void; reject: (e: Error) => void; op: string };
type OpOf<R> = R extends { op: infer O } ? O : never;
type Body = CommRequest extends infer R ? (R extends CommRequest ? Omit<R, 'id'> : never) : never;

export class CommThread {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly signal = new Int32Array(new SharedArrayBuffer(8));
  private failure: Error | null = null;
  rank = -1;
  size = 0;

  private constructor(private readonly worker: Worker) {}

  /** `group`: global ranks of the sub-group its collectives run over (default the whole world). */
  static async start(init: InitOptions, group?: number[]): Promise<CommThread> {
    const signal = new Int32Array(new SharedArrayBuffer(8));
    const data: CommWorkerData = { init, signal, ...(group ? { group } : {}) };
    const worker = new Worker(new URL('./comm-worker.js', import.meta.url), { workerData: data });
    const ct = new CommThread(worker);
    (ct as unknown as { signal: Int32Array }).signal = signal;
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: { type: string; id?: number; message?: string; rank?: number; size?: number }) => {
        if (m.type === 'ready') { ct.rank = m.rank!; ct.size = m.size!; resolve(); return; }
        if (m.type === 'fatal') { const e = new Error(`communication thread: ${m.message}`); ct.fail(e); reject(e); return; }
        const p = ct.pending.get(m.id!);
        if (!p) return;
        ct.pending.delete(m.id!);
        if (ct.pending.size === 0) worker.unref();
        if (m.type === 'done') p.resolve();
        else {
          const e = new Error(`${p.op} failed: ${m.message}`);
          ct.fail(e);
          p.reject(e);
        }
      });
      worker.on('error', (e) => { ct.fail(e); reject(e); });
      worker.on('exit', (code) => { if (code !== 0) ct.fail(new Error(`communication thread exited with code ${code}`)); });
    });
    worker.unref();
    return ct;
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /** Posts a collective; returns its id and a promise that settles when it completes. */
  start(body: Body): { id: number; done: Promise<void> } {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    // Referenced only while work is in flight: an idle thread must not keep the process
    // alive, a busy one must keep the event loop waiting for its answer (under mpirun
    // nothing else may be holding the loop open).
    if (this.pending.size === 0) this.worker.ref();
    const done = new Promise<void>((resolve, reject) => this.pending.set(id, { resolve, reject, op: body.op as OpOf<CommRequest> }));
    done.catch(() => undefined); // failures surface through wait/waitSync as well
    this.worker.postMessage({ ...body, id });
    return { id, done };
  }

  /** Blocks this thread until request `id` (and all before it) completed. */
  waitSync(id: number, timeoutMs = 600_000): void {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const done = Atomics.load(this.signal, 0);
      if (Atomics.load(this.signal, 1) !== 0) throw this.failure ?? new Error('communication thread: a collective failed (see the rank logs)');
      if (done >= id) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`communication thread: request ${id} did not complete within ${timeoutMs / 1000} s`);
      Atomics.wait(this.signal, 0, done, Math.min(left, 1000));
    }
  }

  allReduce(buf: CommBuffer, reduce: ReduceOp = 'sum', deterministic = true) { return this.start({ op: 'allReduce', buf, reduce, deterministic }); }
  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: number[], reduce: ReduceOp = 'sum') {
    return this.start({ op: 'reduceScatterV', input, output, counts, reduce });
  }
  allGatherV(input: CommBuffer, output: CommBuffer, counts: number[]) { return this.start({ op: 'allGatherV', input, output, counts }); }
  barrier() { return this.start({ op: 'barrier' }); }

  async close(): Promise<void> {
    if (this.failure) { await this.worker.terminate(); return; }
    await this.start({ op: 'close' }).done.catch(() => undefined);
    await this.worker.terminate();
  }
}

/** A Float32Array in shared memory (visible to the communication thread). */
export function sharedF32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(Math.max(4, n * 4)), 0, n);
}
