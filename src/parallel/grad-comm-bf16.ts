// parallel.gradDtype=bf16: data-parallel gradient reductions in bf16, half the bytes.
//
// A GradComm wrapper, so data parallelism and ZeRO (data-parallel.ts, zero3.ts) need no
// change: an all-reduce or reduce-scatter of float32 gradients is rounded into a shared
// bf16 mirror of its buffers, reduced there (the runtime sums bf16 in fp32 and rounds
// once) and widened back into the float32 buffer when the reduction completes, whether
// the caller awaits it or waits synchronously. All-gathers carry parameters (ZeRO 1-3)
// and stay fp32. Mirrors are cached per buffer range: buckets, staging buffers and shard
// slices are the same ranges every step.
import type { GradComm } from './data-parallel.js';
import { WorkHandle, type AllReduceOptions, type CommBuffer, type ReduceOp, type Work } from '../runtime/communicator.js';
import { from16, to16 } from '../backend/gemm-lowp.js';

class Bf16Work extends WorkHandle {
  private finished = false;
  constructor(readonly inner: Work, private readonly widen: () => void) {
    super(inner.op, inner.seq, inner.wait().then(() => this.finish()));
    this.promise.catch(() => undefined); // a synchronous waiter sees the failure through waitSync
  }
  /** Widens the result into the float32 buffer, once. */
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.widen();
  }
}

export class Bf16GradComm implements GradComm {
  private readonly mirrors = new WeakMap<ArrayBufferLike, Map<string, Uint16Array>>();
  constructor(private readonly inner: GradComm) {}

  get backend(): string {
    return `${this.inner.backend ?? 'none'}, gradients in bf16`;
  }

  private mirror(x: Float32Array): Uint16Array {
    let byRange = this.mirrors.get(x.buffer);
    if (!byRange) this.mirrors.set(x.buffer, (byRange = new Map()));
    const key = `${x.byteOffset}:${x.length}`;
    let m = byRange.get(key);
    if (!m) byRange.set(key, (m = new Uint16Array(new SharedArrayBuffer(Math.max(8, 2 * x.length)), 0, x.length)));
    return m;
  }

  allReduce(buf: CommBuffer, opts?: AllReduceOptions | ReduceOp): Work {
    if (!(buf instanceof Float32Array)) return this.inner.allReduce(buf, opts);
    const m = this.mirror(buf), n = buf.length;
    to16('bfloat16', 1, n, buf, 0, n, m, 0, n);
    return new Bf16Work(this.inner.allReduce(m, opts), () => from16('bfloat16', 1, n, m, 0, n, buf, 0, n));
  }

  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op?: ReduceOp): Work {
    if (!(input instanceof Float32Array) || !(output instanceof Float32Array)) return this.inner.reduceScatterV(input, output, counts, op);
    const mi = this.mirror(input), mo = this.mirror(output), n = output.length;
    to16('bfloat16', 1, input.length, input, 0, input.length, mi, 0, input.length);
    return new Bf16Work(this.inner.reduceScatterV(mi, mo, counts, op), () => from16('bfloat16', 1, n, mo, 0, n, output, 0, n));
  }

  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[]): Work {
    return this.inner.allGatherV(input, output, counts);
  }

  waitSync(work: Work): void {
    if (work instanceof Bf16Work) {
      this.inner.waitSync(work.inner);
      work.finish();
    } else {
      this.inner.waitSync(work);
    }
  }
}

/** The gradient communicator for parallel.gradDtype: `comm` itself for fp32, the bf16 wrapper otherwise. */
export function gradCommFor(comm: GradComm, gradDtype: 'fp32' | 'bf16' | undefined): GradComm {
  return gradDtype === 'bf16' ? new Bf16GradComm(comm) : comm;
}
