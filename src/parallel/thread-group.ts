// Synchronous group collectives for the tensor-parallel ops (ops/group.ts). Forward and
// backward are synchronous code, and koffi GEMM calls block the main event loop, so the
// collectives run on a communication thread over the tensor-parallel group and this
// thread waits with Atomics.wait. Tensors live in pooled (non-shared) memory: each call
// copies through shared staging buffers that grow to the largest message (reused, where
// the thread would otherwise allocate a fresh SharedArrayBuffer per call).
// When every member runs on this host (socket transports; not under mpirun, where every
// byte travels over MPI), the collectives skip the thread: the calling thread runs them
// through shared memory (runtime/shm-collectives.ts), set up at the first collective
// through the thread. ATHANOR_TP_SHM=0 keeps the thread path.
import type { GroupCollectives, Wire } from '../ops/group.js';
import { from16, to16 } from '../backend/gemm-lowp.js';
import type { F } from '../backend/nn-kernels.js';
import { sharedF32 } from '../runtime/comm-thread.js';
import type { GradComm } from './data-parallel.js';
import { ShmCollectives } from '../runtime/shm-collectives.js';

export class ThreadGroup implements GroupCollectives {
  private a = sharedF32(0);
  private b = sharedF32(0);
  private a16: Uint16Array<ArrayBufferLike> = new Uint16Array(0);
  private b16: Uint16Array<ArrayBufferLike> = new Uint16Array(0);
  /** Payload elements this rank sent, by the ring algorithms' count ((size-1)/size of a reduce-scatter or all-gather, twice that for an all-reduce). */
  sentElements = 0;

  /** The same-host path: undefined until the first collective decides, null where it is unavailable. */
  private shmGroup: ShmCollectives | null | undefined;

  /** `o.shm` false: always the communication thread (the calibration measures both paths). */
  constructor(private readonly comm: GradComm, readonly rank: number, readonly size: number, private readonly o: { shm?: boolean } = {}) {}

  /** The shared-memory collectives, opened (collectively, through the thread) at the first use. */
  private shm(): ShmCollectives | null {
    if (this.shmGroup !== undefined) return this.shmGroup;
    this.shmGroup = null;
    if (this.size < 2 || this.o.shm === false || this.comm.backend === 'mpi' || process.env.ATHANOR_TP_SHM === '0') return null;
    const exchange = (mine: Int32Array): Int32Array => {
      const out = new Int32Array(mine.length * this.size);
      this.comm.waitSync(this.comm.allGatherV(mine, out, new Array<number>(this.size).fill(mine.length)));
      return out;
    };
    this.shmGroup = ShmCollectives.open(this.rank, this.size, exchange, { label: `tensor-parallel group (rank ${this.rank} of ${this.size})` });
    return this.shmGroup;
  }

  /** Which path the collectives take: 'shm' (same host, shared memory) or 'thread' (the communication thread); decided at the first collective. */
  get path(): 'shm' | 'thread' | 'undecided' {
    return this.shmGroup === undefined ? 'undecided' : this.shmGroup ? 'shm' : 'thread';
  }

  /** Releases the shared-memory regions (the thread path needs nothing). */
  close(): void {
    this.shmGroup?.close();
  }

  /** The transport the collectives use (mpi under mpirun, else unix / tcp sockets). */
  get backend(): string {
    return this.comm.backend ?? 'unknown';
  }

  private stage(n: number, which: 'a' | 'b'): Float32Array {
    if (this[which].length < n) this[which] = sharedF32(Math.max(n, Math.ceil(this[which].length * 1.5)));
    return this[which].subarray(0, n);
  }

  private f32(buf: F, op: string): Float32Array {
    if (!(buf instanceof Float32Array)) throw new Error(`tensor parallel ${op}: only float32 tensors cross processes (got float64)`);
    return buf;
  }

  private stage16(n: number, which: 'a' | 'b'): Uint16Array {
    const k = which === 'a' ? 'a16' : 'b16';
    if (this[k].length < n) this[k] = new Uint16Array(new SharedArrayBuffer(Math.max(8, 2 * Math.max(n, Math.ceil(this[k].length * 1.5)))));
    return this[k].subarray(0, n);
  }

  // wire 'bf16': the shared staging holds bf16 (rounded as it is copied in, widened as it is
  // copied out), so half the bytes travel; the runtime's bf16 reductions sum in fp32.
  allReduce(buf: F, op: 'sum' | 'max', wire: Wire = 'fp32'): void {
    const x = this.f32(buf, 'allReduce');
    const shm = this.shm();
    if (wire === 'bf16') {
      const s = this.stage16(x.length, 'a');
      to16('bfloat16', 1, x.length, x, 0, x.length, s, 0, x.length);
      if (shm) shm.allReduce(s, op); else this.comm.waitSync(this.comm.allReduce(s, { op, deterministic: true }));
      from16('bfloat16', 1, x.length, s, 0, x.length, x, 0, x.length);
    } else if (shm) {
      shm.allReduce(x, op);
    } else {
      const s = this.stage(x.length, 'a');
      s.set(x);
      this.comm.waitSync(this.comm.allReduce(s, { op, deterministic: true }));
      x.set(s);
    }
    this.sentElements += (2 * x.length * (this.size - 1)) / this.size;
  }

  allGather(input: F, output: F, wire: Wire = 'fp32'): void {
    const i = this.f32(input, 'allGather'), o = this.f32(output, 'allGather');
    if (o.length !== i.length * this.size) throw new Error(`tensor parallel allGather: output has ${o.length} elements, expected ${i.length} × ${this.size}`);
    const counts = new Array<number>(this.size).fill(i.length);
    const shm = this.shm();
    if (wire === 'bf16') {
      const si = this.stage16(i.length, 'a'), so = this.stage16(o.length, 'b');
      to16('bfloat16', 1, i.length, i, 0, i.length, si, 0, i.length);
      if (shm) shm.allGather(si, so); else this.comm.waitSync(this.comm.allGatherV(si, so, counts));
      from16('bfloat16', 1, o.length, so, 0, o.length, o, 0, o.length);
    } else if (shm) {
      shm.allGather(i, o);
    } else {
      const si = this.stage(i.length, 'a'), so = this.stage(o.length, 'b');
      si.set(i);
      this.comm.waitSync(this.comm.allGatherV(si, so, counts));
      o.set(so);
    }
    this.sentElements += (o.length * (this.size - 1)) / this.size;
  }

  reduceScatter(input: F, output: F, wire: Wire = 'fp32'): void {
    const i = this.f32(input, 'reduceScatter'), o = this.f32(output, 'reduceScatter');
    if (i.length !== o.length * this.size) throw new Error(`tensor parallel reduceScatter: input has ${i.length} elements, expected ${o.length} × ${this.size}`);
    const counts = new Array<number>(this.size).fill(o.length);
    const shm = this.shm();
    if (wire === 'bf16') {
      const si = this.stage16(i.length, 'a'), so = this.stage16(o.length, 'b');
      to16('bfloat16', 1, i.length, i, 0, i.length, si, 0, i.length);
      if (shm) shm.reduceScatter(si, so, 'sum'); else this.comm.waitSync(this.comm.reduceScatterV(si, so, counts, 'sum'));
      from16('bfloat16', 1, o.length, so, 0, o.length, o, 0, o.length);
    } else if (shm) {
      shm.reduceScatter(i, o, 'sum');
    } else {
      const si = this.stage(i.length, 'a'), so = this.stage(o.length, 'b');
      si.set(i);
      this.comm.waitSync(this.comm.reduceScatterV(si, so, counts, 'sum'));
      o.set(so);
    }
    this.sentElements += (i.length * (this.size - 1)) / this.size;
  }
}
