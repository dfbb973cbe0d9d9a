// The data-parallel group's collectives as DataParallel sees them (a ThreadComm sub-group
// implements them), and the trivial group of one.
import { WorkHandle, type AllReduceOptions, type CommBuffer, type ReduceOp, type Work } from '../runtime/communicator.js';

/** Collectives over the data-parallel group on the communication thread (a ThreadComm sub-group implements it). */
export interface GradComm {
  readonly backend?: string;
  allReduce(buf: CommBuffer, opts?: AllReduceOptions | ReduceOp): Work;
  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op?: ReduceOp): Work;
  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[]): Work;
  /** Blocks until `work` completed; for use inside synchronous backward. */
  waitSync(work: Work): void;
  /** Whether `work` completed, without blocking (optional: without it ZeRO-2 blocks for a staging buffer). */
  testSync?(work: Work): boolean;
}

/**
 * The collectives of a one-member data-parallel group (dp = 1 beside tensor or pipeline
 * parallelism): each completes at once with the group-of-one result, so the same
 * DataParallel code (buckets, ZeRO segments, checkpoints) runs without a thread.
 */
export class SingleMemberComm implements GradComm {
  readonly backend = 'local';
  private done(op: string): Work { return new WorkHandle(op, 0, Promise.resolve()); }
  allReduce(): Work { return this.done('allreduce'); }
  reduceScatterV(input: CommBuffer, output: CommBuffer): Work {
    if (output !== input) (output as Float32Array).set(input as Float32Array);
    return this.done('reducescatter');
  }
  allGatherV(input: CommBuffer, output: CommBuffer): Work {
    if (output !== input) (output as Float32Array).set(input as Float32Array);
    return this.done('allgather');
  }
  waitSync(): void { /* every request completed when it was made */ }
}
