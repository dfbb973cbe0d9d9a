// Main-thread handle on the expert-parallel communication thread
// (expert-parallel-worker.ts): posts an exchange and blocks with Atomics.wait until it is
// done, so forward and backward (synchronous code) can all-to-all tokens. Buffers live in
// SharedArrayBuffers (grow-only, reused) so both threads see the same memory.
import { Worker } from 'node:worker_threads';
import type { InitOptions } from '../runtime/init.js';
import type { ReduceOp } from '../runtime/communicator.js';
import type { EpRequest, EpWorkerData } from './expert-parallel-worker.js';

type Body = EpRequest extends infer R ? (R extends EpRequest ? Omit<R, 'id'> : never) : never;

export type A2aAlgorithm = 'flat' | 'hierarchical';

export class EpCommThread {
  private nextId = 1;
  private failure: Error | null = null;
  rank = -1;
  size = 0;
  /** Ranks per node (consecutive global ranks share a node), for the hierarchical all-to-all. */
  localWorldSize = 1;
  private readonly pools = new Map<string, SharedArrayBuffer>();

  private constructor(private readonly worker: Worker, private readonly signal: Int32Array) {}

  /** Starts the thread; it joins its own process group (use a store prefix distinct from other threads'). */
  static async start(init: InitOptions, env?: Record<string, string>): Promise<EpCommThread> {
    const signal = new Int32Array(new SharedArrayBuffer(8));
    const data: EpWorkerData = { init, signal };
    const worker = new Worker(new URL('./expert-parallel-worker.js', import.meta.url), { workerData: data, ...(env ? { env: { ...process.env, ...env } } : {}) });
    const ct = new EpCommThread(worker, signal);
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (m: { type: string; message?: string; rank?: number; size?: number; localWorldSize?: number }) => {
        if (m.type === 'ready') { ct.rank = m.rank!; ct.size = m.size!; ct.localWorldSize = m.localWorldSize!; resolve(); return; }
        if (m.type === 'fatal' || m.type === 'error') {
          const e = new Error(`expert-parallel communication thread: ${m.message}`);
          ct.failure ??= e;
          reject(e);
        }
      });
      worker.on('error', (e) => { ct.failure ??= e; reject(e); });
    });
    worker.unref();
    return ct;
  }

  /** A shared Float32Array / Int32Array of n elements from a grow-only pool slot. */
  shared(slot: string, n: number, kind: 'f32' | 'i32' = 'f32'): Float32Array | Int32Array {
    let sab = this.pools.get(slot);
    if (!sab || sab.byteLength < n * 4) { sab = new SharedArrayBuffer(Math.max(64, n * 4 * 1.25)); this.pools.set(slot, sab); }
    return kind === 'f32' ? new Float32Array(sab, 0, n) : new Int32Array(sab, 0, n);
  }

  private run(body: Body): void {
    if (this.failure) throw this.failure;
    const id = this.nextId++;
    this.worker.postMessage({ ...body, id });
    const deadline = Date.now() + 600_000;
    for (;;) {
      const done = Atomics.load(this.signal, 0);
      if (Atomics.load(this.signal, 1) !== 0) throw new Error(`rank ${this.rank}: expert-parallel ${body.op} failed (see the rank logs)`);
      if (done >= id) return;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`rank ${this.rank}: expert-parallel ${body.op} did not complete within 600 s`);
      Atomics.wait(this.signal, 0, done, Math.min(left, 1000));
    }
  }

  /** Synchronous all-to-all-v over the group of global `ranks` (buffers must be shared). */
  allToAllV(ranks: number[], input: Float32Array | Int32Array, sendCounts: number[], output: Float32Array | Int32Array, recvCounts: number[], algo: A2aAlgorithm = 'flat', nodeSize = this.localWorldSize): void {
    this.run({ op: 'allToAllV', ranks, input, sendCounts, output, recvCounts, hierarchical: algo === 'hierarchical', nodeSize });
  }

  /** Synchronous in-place all-reduce over the group of global `ranks` (shared buffer). */
  allReduce(ranks: number[], buf: Float32Array, reduce: ReduceOp = 'sum'): void {
    this.run({ op: 'allReduce', ranks, buf, reduce });
  }

  /**
   * Waits for the thread's group to close without blocking this thread: under mpirun the
   * store the thread talks to while closing is served by this thread's event loop.
   */
  async close(): Promise<void> {
    if (!this.failure) {
      const id = this.nextId++;
      const done = new Promise<void>((resolve) => {
        const on = (m: { type: string; id?: number }) => {
          if (m.id === id || m.type === 'fatal') { this.worker.off('message', on); resolve(); }
        };
        this.worker.on('message', on);
      });
      this.worker.ref();
      this.worker.postMessage({ op: 'close', ranks: [], id });
      await Promise.race([done, new Promise((r) => setTimeout(r, 30_000).unref())]);
    }
    await this.worker.terminate();
  }
}
