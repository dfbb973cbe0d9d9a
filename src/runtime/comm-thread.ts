// Main-thread handle on the communication worker (comm-worker.ts): a Communicator whose
// operations run on another thread, so they progress while this thread computes (koffi's
// GEMM calls block the main event loop). Sub-groups (`newGroup`) run there too, so TP, PP,
// EP and DP groups all overlap with compute. Under mpirun the thread drives MPI on its own
// duplicates of MPI_COMM_WORLD; otherwise it joins its own socket group through the job's
// store.
//
// Works are awaitable like any other; `waitSync(work)` blocks with Atomics.wait for callers
// inside synchronous code (ZeRO-3 gathers inside backward), draining the replies with
// receiveMessageOnPort. Buffers in SharedArrayBuffers are used in place; any other buffer is
// staged through shared memory and copied back when the operation completes.
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import type { AllReduceOptions, Backend, CommBuffer, Communicator, ReduceOp, Work } from './communicator.js';
import { DistError, WorkHandle, checkRank, dtypeOf } from './communicator.js';
import type { CommReply, CommRequest, CommWorkerData } from './comm-worker.js';
import type { InitOptions, ProcessGroup } from './init.js';
import { MpiCommunicator } from './mpi.js';
import { groupIdOf } from './socket-group.js';

type Body = CommRequest extends infer R ? (R extends CommRequest ? Omit<R, 'id' | 'g'> : never) : never;
type Pending = { resolve: () => void; reject: (e: Error) => void; label: string; after: (() => void) | null };

/** A Work of the communication thread: `id` identifies it for waitSync. */
export class ThreadWork extends WorkHandle {
  constructor(op: string, seq: number, readonly id: number, p: Promise<void>) {
    super(op, seq, p);
    this.promise.catch(() => undefined); // callers that only waitSync must not leave an unhandled rejection
  }
  /** Same promise as wait() (kept for callers written against the older {id, done} form). */
  get done(): Promise<void> { return this.promise; }
}

class Core {
  private nextId = 1;
  readonly pending = new Map<number, Pending>();
  /** Errors of requests that failed while nobody awaited them yet (for waitSync). */
  private readonly failed = new Map<number, Error>();
  failure: Error | null = null;
  rank = -1;
  size = 0;
  backend: Backend = 'local';
  readonly created = new Map<string, number>();

  constructor(readonly worker: Worker, readonly port: MessagePort, readonly bell: Int32Array) {}

  onReply(m: CommReply): void {
    if (m.type === 'ready') return;
    if (m.type === 'fatal') { this.fail(new DistError(`communication thread: ${m.message}`)); return; }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (this.pending.size === 0) this.port.unref();
    if (m.type === 'done') {
      try { p.after?.(); } catch (e) { p.reject(e as Error); return; }
      p.resolve();
      return;
    }
    const e = new DistError(`${p.label} failed: ${m.message}`);
    this.failed.set(m.id, e);
    if (m.fatal) this.fail(e);
    p.reject(e);
  }

  fail(e: Error): void {
    this.failure ??= e;
    for (const [id, p] of this.pending) { this.failed.set(id, this.failure); p.reject(this.failure); }
    this.pending.clear();
  }

  post(g: number, label: string, seq: number, body: Body, after: (() => void) | null = null): ThreadWork {
    if (this.failure) return new ThreadWork(label, seq, 0, Promise.reject(this.failure));
    const id = this.nextId++;
    // Referenced only while work is in flight: an idle thread must not keep the process
    // alive, a busy one must keep the event loop waiting for its answer.
    if (this.pending.size === 0) this.port.ref();
    const p = new Promise<void>((resolve, reject) => this.pending.set(id, { resolve, reject, label, after }));
    p.catch(() => undefined); // surfaced through wait()/waitSync
    this.port.postMessage({ ...body, id, g } as CommRequest);
    Atomics.add(this.bell, 0, 1);
    Atomics.notify(this.bell, 0);
    return new ThreadWork(label, seq, id, p);
  }

  /** Whether request `id` completed, without blocking (drains the replies that arrived; throws if it failed). */
  testSync(id: number): boolean {
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) this.onReply(m.message as CommReply);
    const err = this.failed.get(id);
    if (err) { this.failed.delete(id); throw err; }
    if (this.failure && this.pending.has(id)) throw this.failure;
    return !this.pending.has(id);
  }

  waitSync(id: number, timeoutMs: number): void {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(this.bell, 1);
      for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) this.onReply(m.message as CommReply);
      const err = this.failed.get(id);
      if (err) { this.failed.delete(id); throw err; }
      if (!this.pending.has(id)) return;
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new DistError(`communication thread: request ${id} did not complete within ${timeoutMs / 1000} s`);
      Atomics.wait(this.bell, 1, seen, Math.min(left, 1000));
    }
  }
}

/** Copies a non-shared buffer into shared memory (and back after completion). */
function shared<T extends CommBuffer>(buf: T, copyIn: boolean, backs: (() => void)[] | null): T {
  if (buf.buffer instanceof SharedArrayBuffer) return buf;
  const Ctor = buf.constructor as new (b: SharedArrayBuffer, off: number, n: number) => T;
  const s = new Ctor(new SharedArrayBuffer(Math.max(8, buf.byteLength)), 0, buf.length);
  if (copyIn) (s as Float32Array).set(buf as Float32Array);
  backs?.push(() => (buf as Float32Array).set(s as Float32Array));
  return s;
}
const runAll = (backs: (() => void)[]): (() => void) | null => (backs.length ? () => { for (const b of backs) b(); } : null);

/** A group on the communication thread (the world: CommThread; sub-groups: newGroup). */
export class ThreadComm implements Communicator {
  readonly rank: number;
  readonly size: number;
  private seq = 0;

  protected constructor(protected readonly core: Core, readonly gid: number, readonly ranks: readonly number[], readonly name: string) {
    this.rank = ranks.indexOf(core.rank);
    this.size = ranks.length;
  }

  get backend(): Backend { return this.core.backend; }

  private coll(name: string, body: Body, after: (() => void) | null): ThreadWork {
    const seq = ++this.seq;
    return this.core.post(this.gid, `rank ${this.core.rank}: ${name}#${seq} in group '${this.name}' (communication thread)`, seq, body, after);
  }

  /** `deterministic` (third argument) is the older call form's; it overrides opts.deterministic. */
  allReduce(buf: CommBuffer, o?: AllReduceOptions | ReduceOp, deterministic?: boolean): ThreadWork {
    const opts: AllReduceOptions = typeof o === 'string' ? { op: o } : { ...o };
    if (deterministic !== undefined) opts.deterministic = deterministic;
    dtypeOf(buf);
    const backs: (() => void)[] = [];
    const b = shared(buf, true, backs);
    return this.coll('allreduce', { op: 'allReduce', buf: b, reduce: opts.op ?? 'sum', algorithm: opts.algorithm, deterministic: opts.deterministic }, runAll(backs));
  }

  reduceScatter(input: CommBuffer, output: CommBuffer, op: ReduceOp = 'sum'): ThreadWork {
    if (input.length !== output.length * this.size) throw new DistError(`reduceScatter: input has ${input.length} elements, expected size*output = ${this.size}*${output.length}`);
    return this.reduceScatterV(input, output, new Array<number>(this.size).fill(output.length), op);
  }

  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op: ReduceOp = 'sum'): ThreadWork {
    const backs: (() => void)[] = [];
    const i = shared(input, true, null), out = shared(output, false, backs);
    return this.coll('reducescatter', { op: 'reduceScatterV', input: i, output: out, counts: [...counts], reduce: op }, runAll(backs));
  }

  allGather(input: CommBuffer, output: CommBuffer): ThreadWork {
    if (output.length !== input.length * this.size) throw new DistError(`allGather: output has ${output.length} elements, expected size*input = ${this.size}*${input.length}`);
    return this.allGatherV(input, output, new Array<number>(this.size).fill(input.length));
  }

  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[]): ThreadWork {
    const backs: (() => void)[] = [];
    const i = shared(input, true, null), out = shared(output, false, backs);
    return this.coll('allgather', { op: 'allGatherV', input: i, output: out, counts: [...counts] }, runAll(backs));
  }

  broadcast(buf: CommBuffer, root: number): ThreadWork {
    checkRank('broadcast root', root, this.size);
    const backs: (() => void)[] = [];
    const b = shared(buf, true, backs);
    return this.coll('broadcast', { op: 'broadcast', buf: b, root }, runAll(backs));
  }

  allToAll(input: CommBuffer, output: CommBuffer): ThreadWork {
    if (input.length !== output.length || input.length % this.size !== 0) throw new DistError(`allToAll: input (${input.length}) and output (${output.length}) must have equal lengths divisible by the group size ${this.size}`);
    const c = new Array<number>(this.size).fill(input.length / this.size);
    return this.allToAllV(input, c, output, c);
  }

  allToAllV(input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[]): ThreadWork {
    const backs: (() => void)[] = [];
    const i = shared(input, true, null), out = shared(output, false, backs);
    return this.coll('alltoall', { op: 'allToAllV', input: i, sendCounts: [...sendCounts], output: out, recvCounts: [...recvCounts] }, runAll(backs));
  }

  send(buf: CommBuffer, dst: number, tag = 0): ThreadWork {
    checkRank('send', dst, this.size);
    const b = shared(buf, true, null);
    return this.core.post(this.gid, `rank ${this.core.rank}: send to rank ${this.ranks[dst]} (tag ${tag}) in group '${this.name}' (communication thread)`, 0, { op: 'send', buf: b, peer: dst, tag }, null);
  }

  recv(buf: CommBuffer, src: number, tag = 0): ThreadWork {
    checkRank('recv', src, this.size);
    const backs: (() => void)[] = [];
    const b = shared(buf, false, backs);
    return this.core.post(this.gid, `rank ${this.core.rank}: recv from rank ${this.ranks[src]} (tag ${tag}) in group '${this.name}' (communication thread)`, 0, { op: 'recv', buf: b, peer: src, tag }, runAll(backs));
  }

  barrier(): ThreadWork {
    return this.coll('barrier', { op: 'barrier' }, null);
  }

  newGroup(globalRanks: readonly number[], name?: string): ThreadComm {
    const ranks = [...globalRanks];
    if (new Set(ranks).size !== ranks.length) throw new DistError(`newGroup: duplicate ranks in [${ranks.join(',')}]`);
    for (const r of ranks) checkRank('newGroup', r, this.core.size);
    if (!ranks.includes(this.core.rank)) throw new DistError(`newGroup: rank ${this.core.rank} is not a member of [${ranks.join(',')}]`);
    // The id is derived from the rank list and how many groups with that list this rank made
    // before, so every member names the group alike (the watchdog's status queries use it).
    const k = ranks.join(',');
    const nth = (this.core.created.get(k) ?? 0) + 1;
    this.core.created.set(k, nth);
    const id = groupIdOf(ranks, nth + 1) | 0;
    const full = name ?? `group[${k}]#${nth}`;
    this.core.post(this.gid, `newGroup '${full}'`, 0, { op: 'newGroup', ranks, name: full, newId: id }, null);
    return new ThreadComm(this.core, id, ranks, full);
  }

  /** Blocks this thread until `work` completed (throws if it failed). */
  waitSync(work: Work | number, timeoutMs = 600_000): void {
    this.core.waitSync(typeof work === 'number' ? work : (work as ThreadWork).id, timeoutMs);
  }

  /** Whether `work` completed, without blocking (for synchronous code that has other work to do meanwhile). */
  testSync(work: Work | number): boolean {
    return this.core.testSync(typeof work === 'number' ? work : (work as ThreadWork).id);
  }

  /** Sub-groups: nothing to release (the thread's world closes them all). */
  async destroy(): Promise<void> {}
}

export interface CommThreadOptions {
  /** Store key prefix of the thread's socket group (a second thread in the same job needs its own). */
  prefix?: string;
  watchdogS?: number;
}

export class CommThread extends ThreadComm {
  private constructor(core: Core, gid: number, ranks: readonly number[], name: string) { super(core, gid, ranks, name); }

  /**
   * Starts the thread beside `pg` (every rank calls it at the same point). Under MPI the main
   * thread duplicates the world communicator twice for it (data and watchdog status), so its
   * traffic never matches the main thread's.
   *
   * The older form `start(init, group?)` (InitOptions for the thread's own socket group, and
   * optionally the global ranks its collectives run over) still works; when this process's
   * group is MPI it ignores the socket rendezvous in `init` and uses MPI as well.
   */
  static async start(pg: ProcessGroup | InitOptions, o?: CommThreadOptions | number[]): Promise<CommThread> {
    const isGroup = typeof (pg as Partial<ProcessGroup>).allReduce === 'function';
    const opts: CommThreadOptions = Array.isArray(o) ? {} : (o ?? {});
    const init0 = isGroup ? null : (pg as InitOptions);
    const watchdogS = opts.watchdogS ?? init0?.watchdogS ?? (process.env.ATHANOR_WATCHDOG_S ? Number(process.env.ATHANOR_WATCHDOG_S) : 300);
    const { port1, port2 } = new MessageChannel();
    const bell = new Int32Array(new SharedArrayBuffer(8));
    const mpiWorld = isGroup ? ((pg as ProcessGroup).backend === 'mpi' ? pg : null) : MpiCommunicator.processWorld;
    let data: CommWorkerData, size: number;
    if (mpiWorld) {
      if (!(mpiWorld instanceof MpiCommunicator)) throw new DistError('CommThread.start: an MPI process group must be the MPI world communicator');
      size = mpiWorld.size;
      const comm = await mpiWorld.dupHandle();
      const statusComm = await mpiWorld.dupHandle();
      data = { mode: 'mpi', port: port2, bell, worldId: worldIdOf(size), comm, statusComm, watchdogS };
    } else if (isGroup) {
      const g = pg as ProcessGroup;
      size = g.size;
      const init: InitOptions = { prefix: opts.prefix ?? 'athanor/comm-thread', hostStore: false, rank: g.rank, worldSize: g.size, watchdogS, backend: g.backend === 'local' ? 'auto' : g.backend };
      if (g.rendezvous) Object.assign(init, { masterAddr: g.rendezvous.host, masterPort: g.rendezvous.port, token: g.rendezvous.token });
      data = { mode: 'socket', port: port2, bell, worldId: 0, init };
    } else {
      size = -1;
      data = { mode: 'socket', port: port2, bell, worldId: 0, init: { ...init0!, watchdogS } };
    }
    const worker = new Worker(new URL('./comm-worker.js', import.meta.url), { workerData: data, transferList: [port2] });
    const core = new Core(worker, port1, bell);
    await new Promise<void>((resolve, reject) => {
      port1.on('message', (m: CommReply) => {
        if (m.type === 'ready') { core.rank = m.rank; core.size = m.size; core.backend = m.backend as Backend; resolve(); return; }
        if (m.type === 'fatal') reject(new DistError(`communication thread: ${m.message}`));
        core.onReply(m);
      });
      worker.on('error', (e) => { core.fail(e); reject(e); });
      worker.on('exit', (code) => { if (code !== 0) { const e = new DistError(`communication thread exited with code ${code}`); core.fail(e); reject(e); } });
    });
    worker.unref();
    port1.unref();
    if (size < 0) size = core.size;
    const world = new CommThread(core, data.mode === 'mpi' ? data.worldId : 0, [...Array(core.size).keys()], 'world');
    const group = Array.isArray(o) ? o : null;
    if (!group || group.length === core.size) return world;
    // The older form's sub-group: the returned handle runs over it; close() ends the thread.
    const sub = world.newGroup(group, 'comm-thread');
    return new CommThread(core, sub.gid, sub.ranks, sub.name);
  }

  /** Finishes everything posted, closes the thread's connections and ends it. */
  async close(): Promise<void> {
    const core = this.core;
    if (!core.failure) await core.post(this.gid, 'close', 0, { op: 'close' }).wait().catch(() => undefined);
    await core.worker.terminate();
    core.port.close();
  }

  override async destroy(): Promise<void> { await this.close(); }
}

function worldIdOf(size: number): number {
  return groupIdOf([...Array(size).keys()], 1) | 0;
}

/** A Float32Array in shared memory (visible to the communication thread). */
export function sharedF32(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(Math.max(4, n * 4)), 0, n);
}
