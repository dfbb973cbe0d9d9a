// MPI transport through koffi (OpenMPI's libmpi.so.40): rank/world come from mpirun, and each
// collective maps to MPI's own implementation. Blocking MPI calls run on koffi's worker
// threads (`fn.async`), so the event loop stays free and computation overlaps communication.
// Collectives of one communicator are issued strictly in program order (a promise queue),
// which MPI requires; MPI is initialised with MPI_THREAD_MULTIPLE.
//
// OpenMPI handles are the addresses of exported globals (MPI_COMM_WORLD = &ompi_mpi_comm_world,
// MPI_FLOAT = &ompi_mpi_float, ...); MPI_IN_PLACE is the address 1.
import { createRequire } from 'node:module';
import { writeSync } from 'node:fs';
import type { AllReduceOptions, CommBuffer, CommDType, Communicator, ReduceOp, Work } from './communicator.js';
import { DistError, WorkHandle, checkRank, dtypeOf } from './communicator.js';
import { divideInPlace } from './reduce-kernels.js';

export type Fn = ((...a: unknown[]) => number) & { async: (...a: unknown[]) => void };

export interface MpiApi {
  koffi: { address(v: unknown): bigint };
  fns: Record<string, Fn>;
  h: { world: bigint; float: bigint; int: bigint; u16: bigint; sum: bigint; max: bigint };
}

export const MPI_LIB = process.env.ATHANOR_MPI_LIB ?? 'libmpi.so.40';
const IN_PLACE = 1n;

let api: MpiApi | null = null;
let loadError: string | null = null;
let initialized = false;
let aborting = false;
const THREAD_LEVELS = ['MPI_THREAD_SINGLE', 'MPI_THREAD_FUNNELED', 'MPI_THREAD_SERIALIZED', 'MPI_THREAD_MULTIPLE'];

/** The thread level MPI was initialised with (e.g. 'MPI_THREAD_MULTIPLE'). */
export function mpiThreadLevel(): string {
  const p = [0];
  need().fns.queryThread!(p);
  return THREAD_LEVELS[p[0]!] ?? String(p[0]);
}

/**
 * Prints `message` and ends the whole job through MPI_Abort (callable from any thread). A
 * hung MPI call cannot be interrupted, and MPI_Finalize at a plain exit would wait for the
 * peers that are stuck with it; MPI_Abort makes mpirun stop every rank.
 */
export function mpiAbortJob(message: string): never {
  try { writeSync(2, `${message}\n`); } catch { /* stderr gone */ }
  aborting = true;
  const a = need();
  a.fns.abort!(a.h.world, 1);
  process.exit(1);
}

/** True when this process was started by OpenMPI's mpirun. */
export function underMpirun(): boolean {
  return process.env.OMPI_COMM_WORLD_RANK !== undefined && process.env.OMPI_COMM_WORLD_SIZE !== undefined;
}

function load(): MpiApi | null {
  if (api || loadError) return api;
  try {
    const require = createRequire(import.meta.url);
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const koffi = require('koffi');
    const lib = koffi.load(MPI_LIB);
    const f = (sig: string): Fn => lib.func(sig) as Fn;
    const fns: Record<string, Fn> = {
      init: f('int MPI_Init_thread(void *argc, void *argv, int required, _Out_ int *provided)'),
      initialized: f('int MPI_Initialized(_Out_ int *flag)'),
      finalized: f('int MPI_Finalized(_Out_ int *flag)'),
      finalize: f('int MPI_Finalize()'),
      commRank: f('int MPI_Comm_rank(void *comm, _Out_ int *rank)'),
      commSize: f('int MPI_Comm_size(void *comm, _Out_ int *size)'),
      allreduce: f('int MPI_Allreduce(void *sbuf, void *rbuf, int count, void *dt, void *op, void *comm)'),
      reduceScatter: f('int MPI_Reduce_scatter(void *sbuf, void *rbuf, void *counts, void *dt, void *op, void *comm)'),
      allgatherv: f('int MPI_Allgatherv(void *sbuf, int scount, void *sdt, void *rbuf, void *rcounts, void *displs, void *rdt, void *comm)'),
      bcast: f('int MPI_Bcast(void *buf, int count, void *dt, int root, void *comm)'),
      alltoallv: f('int MPI_Alltoallv(void *sbuf, void *scounts, void *sdispls, void *sdt, void *rbuf, void *rcounts, void *rdispls, void *rdt, void *comm)'),
      send: f('int MPI_Send(void *buf, int count, void *dt, int dst, int tag, void *comm)'),
      recv: f('int MPI_Recv(void *buf, int count, void *dt, int src, int tag, void *comm, void *status)'),
      barrier: f('int MPI_Barrier(void *comm)'),
      commGroup: f('int MPI_Comm_group(void *comm, void *group)'),
      groupIncl: f('int MPI_Group_incl(void *group, int n, void *ranks, void *newgroup)'),
      commCreateGroup: f('int MPI_Comm_create_group(void *comm, void *group, int tag, void *newcomm)'),
      commDup: f('int MPI_Comm_dup(void *comm, void *newcomm)'),
      abort: f('int MPI_Abort(void *comm, int code)'),
      queryThread: f('int MPI_Query_thread(_Out_ int *provided)'),
      // Non-blocking forms, for the communication thread's polling engine (mpi-engine.ts).
      iallreduce: f('int MPI_Iallreduce(void *sbuf, void *rbuf, int count, void *dt, void *op, void *comm, void *req)'),
      ireduceScatter: f('int MPI_Ireduce_scatter(void *sbuf, void *rbuf, void *counts, void *dt, void *op, void *comm, void *req)'),
      iallgatherv: f('int MPI_Iallgatherv(void *sbuf, int scount, void *sdt, void *rbuf, void *rcounts, void *displs, void *rdt, void *comm, void *req)'),
      ibcast: f('int MPI_Ibcast(void *buf, int count, void *dt, int root, void *comm, void *req)'),
      ialltoallv: f('int MPI_Ialltoallv(void *sbuf, void *scounts, void *sdispls, void *sdt, void *rbuf, void *rcounts, void *rdispls, void *rdt, void *comm, void *req)'),
      ibarrier: f('int MPI_Ibarrier(void *comm, void *req)'),
      isend: f('int MPI_Isend(void *buf, int count, void *dt, int dst, int tag, void *comm, void *req)'),
      irecv: f('int MPI_Irecv(void *buf, int count, void *dt, int src, int tag, void *comm, void *req)'),
      test: f('int MPI_Test(void *req, _Out_ int *flag, void *status)'),
      cancel: f('int MPI_Cancel(void *req)'),
    };
    const sym = (n: string): bigint => lib.symbol(n) as bigint;
    api = {
      koffi, fns,
      h: { world: sym('ompi_mpi_comm_world'), float: sym('ompi_mpi_float'), int: sym('ompi_mpi_int'), u16: sym('ompi_mpi_uint16_t'), sum: sym('ompi_mpi_op_sum'), max: sym('ompi_mpi_op_max') },
    };
  } catch (e) {
    loadError = `MPI is not available: cannot load ${MPI_LIB} through koffi (${(e as Error).message}); install OpenMPI (Debian: openmpi-bin libopenmpi-dev) or use the tcp/unix backends`;
  }
  return api;
}

/** null when MPI can be used, else a sentence saying why not. */
export function mpiUnavailableReason(): string | null {
  load();
  return loadError;
}

/** The bound library (throws with the reason when MPI cannot be loaded). */
export function mpiApi(): MpiApi {
  return need();
}

function need(): MpiApi {
  const a = load();
  if (!a) throw new DistError(loadError!);
  return a;
}

/** MPI_Init_thread(MPI_THREAD_MULTIPLE) once per process; returns world rank and size. */
export function mpiInit(): { rank: number; size: number } {
  const a = need();
  if (!initialized) {
    const flag = [0];
    a.fns.initialized!(flag);
    if (!flag[0]) {
      const prov = [0];
      const rc = a.fns.init!(null, null, 3, prov);
      if (rc !== 0) throw new DistError(`MPI_Init_thread failed with code ${rc}`);
      // The communication thread calls MPI while the main thread may be in a collective too.
      if (prov[0]! < 3) throw new DistError(`MPI_Init_thread: ${MPI_LIB} provides thread level ${THREAD_LEVELS[prov[0]!] ?? prov[0]}, but athanor needs MPI_THREAD_MULTIPLE (its communication thread calls MPI beside the main thread); use an MPI built with thread support (OpenMPI: ompi_info | grep 'MPI_THREAD_MULTIPLE: yes')`);
      // A failed rank must not wait in MPI_Finalize (which synchronises with every rank) for
      // peers that are stuck waiting for it: it aborts the job instead, so mpirun stops all.
      process.once('exit', (code) => {
        if (aborting) return;
        try {
          const f = [0];
          a.fns.finalized!(f);
          if (f[0]) return;
          if (code !== 0) { aborting = true; a.fns.abort!(a.h.world, code || 1); } else a.fns.finalize!();
        } catch { /* exiting anyway */ }
      });
    }
    initialized = true;
  }
  const r = [0], s = [0];
  a.fns.commRank!(a.h.world, r); a.fns.commSize!(a.h.world, s);
  return { rank: r[0]!, size: s[0]! };
}

function call(fn: Fn, what: string, args: unknown[]): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    fn.async(...args, (err: Error | null, rc: number) => {
      if (err) reject(new DistError(`${what}: ${err.message}`));
      else if (rc !== 0) reject(new DistError(`${what}: MPI error code ${rc}`));
      else resolve();
    });
  });
}

export interface MpiOptions { watchdogS: number; name?: string }

export class MpiCommunicator implements Communicator {
  readonly backend = 'mpi' as const;
  readonly rank: number;
  readonly size: number;
  private queue: Promise<unknown> = Promise.resolve();
  private p2pQueues = new Map<string, Promise<unknown>>();
  private seq = 0;
  private commP: Promise<bigint>;

  constructor(readonly ranks: readonly number[], readonly name: string, private readonly worldRank: number,
    comm: bigint | Promise<bigint>, private readonly opts: MpiOptions) {
    this.rank = ranks.indexOf(worldRank);
    this.size = ranks.length;
    this.commP = Promise.resolve(comm);
  }

  static world(opts: MpiOptions): MpiCommunicator {
    const { rank, size } = mpiInit();
    return new MpiCommunicator([...Array(size).keys()], opts.name ?? 'world', rank, need().h.world, opts);
  }

  private dt(d: CommDType): bigint { const h = need().h; return d === 'float32' ? h.float : d === 'int32' ? h.int : h.u16; }

  private enqueue(name: string, body: (comm: bigint) => Promise<void>, queueKey?: string, peer?: number): Work {
    const seq = queueKey ? 0 : ++this.seq;
    const label = queueKey ? name : `${name}#${seq}`;
    const prev = queueKey ? this.p2pQueues.get(queueKey) ?? Promise.resolve() : this.queue;
    const run = async (): Promise<void> => {
      const comm = await this.commP;
      const limit = this.opts.watchdogS * 1000;
      // An MPI call cannot be interrupted, so the watchdog can only report and exit.
      const t = setTimeout(() => {
        const who = peer !== undefined ? `; still waiting for rank ${this.ranks[peer]}` : '; this main-thread MPI communicator cannot tell which ranks did not arrive (the communication thread\'s can)';
        mpiAbortJob(`athanor watchdog: rank ${this.worldRank}: ${label} in group '${this.name}' (mpi, ranks ${this.ranks.join(',')}) did not complete within ${this.opts.watchdogS} s${who} (set ATHANOR_WATCHDOG_S to change the limit); aborting the MPI job`);
      }, limit);
      t.unref();
      try { await body(comm); } finally { clearTimeout(t); }
    };
    const p = prev.then(run, run);
    const tail = p.catch(() => {});
    if (queueKey) this.p2pQueues.set(queueKey, tail); else this.queue = tail;
    return new WorkHandle(name, seq, p.catch((e: Error) => { throw new DistError(`rank ${this.worldRank}: ${label} in group '${this.name}' (mpi) failed: ${e.message}`); }));
  }

  allReduce(buf: CommBuffer, o?: AllReduceOptions | ReduceOp): Work {
    const op = (typeof o === 'string' ? o : o?.op) ?? 'sum';
    const d = dtypeOf(buf);
    if (op === 'avg' && d === 'int32') throw new DistError("dist: op 'avg' is not supported for int32 buffers");
    return this.enqueue('allreduce', async (comm) => {
      if (buf.length === 0) return;
      const a = need();
      const mop = op === 'max' ? a.h.max : a.h.sum;
      if (d === 'bfloat16') {
        // MPI has no bfloat16: reduce widened to float32, round once.
        const wide = widen(buf as Uint16Array);
        await call(a.fns.allreduce!, 'MPI_Allreduce', [IN_PLACE, wide, wide.length, a.h.float, mop, comm]);
        narrowInto(wide, buf as Uint16Array, op === 'avg' ? this.size : 1);
        return;
      }
      await call(a.fns.allreduce!, 'MPI_Allreduce', [IN_PLACE, buf, buf.length, this.dt(d), mop, comm]);
      if (op === 'avg') divideInPlace(d, buf, this.size);
    });
  }

  reduceScatter(input: CommBuffer, output: CommBuffer, op: ReduceOp = 'sum'): Work {
    if (input.length !== output.length * this.size) throw new DistError(`reduceScatter: input has ${input.length} elements, expected size*output = ${this.size}*${output.length}`);
    return this.reduceScatterV(input, output, new Array<number>(this.size).fill(output.length), op);
  }

  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op: ReduceOp = 'sum'): Work {
    const d = dtypeOf(input);
    if (dtypeOf(output) !== d) throw new DistError('reduceScatterV: input and output dtypes differ');
    if (op === 'avg' && d === 'int32') throw new DistError("dist: op 'avg' is not supported for int32 buffers");
    if (counts.length !== this.size || counts.reduce((x, y) => x + y, 0) !== input.length || output.length !== counts[this.rank]) throw new DistError(`reduceScatterV: counts [${counts.join(',')}] do not match input ${input.length} / output ${output.length}`);
    return this.enqueue('reducescatter', async (comm) => {
      if (input.length === 0) return;
      const a = need();
      const mop = op === 'max' ? a.h.max : a.h.sum;
      const c = Int32Array.from(counts);
      if (d === 'bfloat16') {
        const wi = widen(input as Uint16Array), wo = new Float32Array(output.length);
        await call(a.fns.reduceScatter!, 'MPI_Reduce_scatter', [wi, wo, c, a.h.float, mop, comm]);
        narrowInto(wo, output as Uint16Array, op === 'avg' ? this.size : 1);
        return;
      }
      await call(a.fns.reduceScatter!, 'MPI_Reduce_scatter', [input, output, c, this.dt(d), mop, comm]);
      if (op === 'avg') divideInPlace(d, output, this.size);
    });
  }

  allGather(input: CommBuffer, output: CommBuffer): Work {
    if (output.length !== input.length * this.size) throw new DistError(`allGather: output has ${output.length} elements, expected size*input = ${this.size}*${input.length}`);
    return this.allGatherV(input, output, new Array<number>(this.size).fill(input.length));
  }

  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[]): Work {
    const d = dtypeOf(input);
    if (counts.length !== this.size || counts.reduce((x, y) => x + y, 0) !== output.length || input.length !== counts[this.rank]) throw new DistError(`allGatherV: counts [${counts.join(',')}] do not match input ${input.length} / output ${output.length}`);
    return this.enqueue('allgather', async (comm) => {
      if (output.length === 0) return;
      const a = need();
      const c = Int32Array.from(counts), disp = exclusiveScan(counts);
      await call(a.fns.allgatherv!, 'MPI_Allgatherv', [input, input.length, this.dt(d), output, c, disp, this.dt(d), comm]);
    });
  }

  broadcast(buf: CommBuffer, root: number): Work {
    const d = dtypeOf(buf);
    checkRank('broadcast root', root, this.size);
    return this.enqueue('broadcast', async (comm) => {
      if (buf.length === 0) return;
      await call(need().fns.bcast!, 'MPI_Bcast', [buf, buf.length, this.dt(d), root, comm]);
    });
  }

  allToAll(input: CommBuffer, output: CommBuffer): Work {
    if (input.length !== output.length || input.length % this.size !== 0) throw new DistError(`allToAll: input (${input.length}) and output (${output.length}) must have equal lengths divisible by ${this.size}`);
    const c = new Array<number>(this.size).fill(input.length / this.size);
    return this.allToAllV(input, c, output, c);
  }

  allToAllV(input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[]): Work {
    const d = dtypeOf(input);
    return this.enqueue('alltoall', async (comm) => {
      const a = need();
      await call(a.fns.alltoallv!, 'MPI_Alltoallv', [input, Int32Array.from(sendCounts), exclusiveScan(sendCounts), this.dt(d), output, Int32Array.from(recvCounts), exclusiveScan(recvCounts), this.dt(d), comm]);
    });
  }

  send(buf: CommBuffer, dst: number, tag = 0): Work {
    const d = dtypeOf(buf);
    checkRank('send', dst, this.size);
    return this.enqueue(`send to rank ${this.ranks[dst]} (tag ${tag})`, (comm) => call(need().fns.send!, 'MPI_Send', [buf, buf.length, this.dt(d), dst, tag, comm]), `s${dst}:${tag}`, dst);
  }

  recv(buf: CommBuffer, src: number, tag = 0): Work {
    const d = dtypeOf(buf);
    checkRank('recv', src, this.size);
    return this.enqueue(`recv from rank ${this.ranks[src]} (tag ${tag})`, (comm) => call(need().fns.recv!, 'MPI_Recv', [buf, buf.length, this.dt(d), src, tag, comm, null]), `r${src}:${tag}`, src);
  }

  barrier(): Work {
    return this.enqueue('barrier', (comm) => call(need().fns.barrier!, 'MPI_Barrier', [comm]));
  }

  newGroup(globalRanks: readonly number[], name?: string): Communicator {
    const ranks = [...globalRanks];
    if (!ranks.includes(this.worldRank)) throw new DistError(`newGroup: rank ${this.worldRank} is not a member of [${ranks.join(',')}]`);
    const local = ranks.map((g) => { const i = this.ranks.indexOf(g); if (i < 0) throw new DistError(`newGroup: rank ${g} is not in the parent group`); return i; });
    // MPI_Comm_create_group is collective over the new group's members only; it is queued
    // behind this communicator's in-flight collectives.
    let made!: (c: bigint) => void, failed!: (e: Error) => void;
    const commP = new Promise<bigint>((res, rej) => { made = res; failed = rej; });
    commP.catch(() => {});
    const tag = groupTag(ranks);
    this.enqueue('newGroup', async (comm) => {
      const a = need();
      const g = new BigUint64Array(1), ng = new BigUint64Array(1), nc = new BigUint64Array(1);
      await call(a.fns.commGroup!, 'MPI_Comm_group', [comm, g]);
      await call(a.fns.groupIncl!, 'MPI_Group_incl', [g[0]!, local.length, Int32Array.from(local), ng]);
      await call(a.fns.commCreateGroup!, 'MPI_Comm_create_group', [comm, ng[0]!, tag, nc]);
      made(nc[0]!);
    }).wait().catch(failed);
    return new MpiCommunicator(ranks, name ?? `group[${ranks.join(',')}]`, this.worldRank, commP, this.opts);
  }

  /**
   * MPI_Comm_dup of this communicator, in this communicator's collective order (every member
   * calls it): another thread's traffic then never matches this one's.
   */
  async dupHandle(): Promise<bigint> {
    const out = new BigUint64Array(1);
    await this.enqueue('commDup', (comm) => call(need().fns.commDup!, 'MPI_Comm_dup', [comm, out])).wait();
    return out[0]!;
  }

  async destroy(): Promise<void> { await this.queue; }
}

export function groupTag(ranks: readonly number[]): number {
  let h = 17;
  for (const r of ranks) h = (Math.imul(h, 31) + r) & 0x7fff;
  return h;
}

export function exclusiveScan(c: readonly number[]): Int32Array {
  const o = new Int32Array(c.length);
  for (let i = 1; i < c.length; i++) o[i] = o[i - 1]! + c[i - 1]!;
  return o;
}

export function widen(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) u[i] = h[i]! << 16;
  return out;
}

export function narrowInto(w: Float32Array, out: Uint16Array, divisor: number): void {
  if (divisor !== 1) for (let i = 0; i < w.length; i++) w[i] = w[i]! / divisor;
  const u = new Uint32Array(w.buffer, w.byteOffset, w.length);
  for (let i = 0; i < w.length; i++) {
    const x = u[i]!;
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 0x40) & 0xffff : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
}
