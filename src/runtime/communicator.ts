// The one communicator interface every transport implements (sockets: tcp/unix, MPI, local).
// Buffers are raw typed arrays so the runtime does not depend on the tensor library:
// Float32Array = float32, Uint16Array = bfloat16 bits, Int32Array = int32.

export type CommDType = 'float32' | 'bfloat16' | 'int32';
export type CommBuffer = Float32Array | Uint16Array | Int32Array;
export type ReduceOp = 'sum' | 'avg' | 'max';
export type Backend = 'tcp' | 'unix' | 'mpi' | 'local';
/** What backend a caller asks for; 'auto' = MPI under mpirun, else unix within a host and tcp across hosts. */
export type BackendRequest = Backend | 'auto';

export function dtypeOf(buf: CommBuffer): CommDType {
  if (buf instanceof Float32Array) return 'float32';
  if (buf instanceof Uint16Array) return 'bfloat16';
  if (buf instanceof Int32Array) return 'int32';
  throw new Error(`dist: unsupported buffer type ${(buf as object).constructor?.name} (expected Float32Array, Uint16Array (bfloat16) or Int32Array)`);
}

export function bytesOf(buf: CommBuffer): Uint8Array {
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

export interface AllReduceOptions {
  op?: ReduceOp;
  /** Force an algorithm (default: 'direct' for small messages, 'ring' for large). */
  algorithm?: 'ring' | 'direct';
  /**
   * Default true: the reduction order is fixed, so every rank ends with bit-identical
   * buffers independent of message arrival timing. false lets small-message allreduce
   * accumulate in arrival order (results may then differ in the last bit between runs).
   */
  deterministic?: boolean;
}

/** An in-flight collective. Awaitable; `wait()` resolves when the local buffers are final. */
export interface Work<T = void> extends PromiseLike<T> {
  readonly op: string;
  readonly seq: number;
  wait(): Promise<T>;
  isCompleted(): boolean;
}

export class WorkHandle<T = void> implements Work<T> {
  private completed = false;
  readonly promise: Promise<T>;
  constructor(readonly op: string, readonly seq: number, p: Promise<T>) {
    this.promise = p.then((v) => { this.completed = true; return v; }, (e) => { this.completed = true; throw e; });
  }
  wait(): Promise<T> { return this.promise; }
  isCompleted(): boolean { return this.completed; }
  then<R1 = T, R2 = never>(onf?: ((v: T) => R1 | PromiseLike<R1>) | null, onr?: ((e: unknown) => R2 | PromiseLike<R2>) | null): Promise<R1 | R2> {
    return this.promise.then(onf, onr);
  }
}

/**
 * A group of ranks that run collectives together. All group members must issue the same
 * collectives in the same order (each carries a per-group sequence number that is checked).
 * Ranks passed to send/recv/broadcast roots are ranks *within this group*; `ranks[i]` maps
 * group rank i to the global rank.
 */
export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** Global ranks of the members, in group-rank order. */
  readonly ranks: readonly number[];
  readonly backend: Backend;
  readonly name: string;

  /** In place. */
  allReduce(buf: CommBuffer, opts?: AllReduceOptions | ReduceOp): Work;
  /** input.length === size * output.length; output receives this rank's reduced shard. input is not modified. */
  reduceScatter(input: CommBuffer, output: CommBuffer, op?: ReduceOp): Work;
  /** Uneven shards: counts[i] elements go to group rank i; sum(counts) === input.length, output.length === counts[rank]. */
  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op?: ReduceOp): Work;
  /** output.length === size * input.length; rank i's input lands at output[i*input.length ...]. */
  allGather(input: CommBuffer, output: CommBuffer): Work;
  /** Uneven: rank i contributes counts[i] elements; input.length === counts[rank]. */
  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[]): Work;
  /** In place; root is a group rank. */
  broadcast(buf: CommBuffer, root: number): Work;
  /** Equal chunks: input/output length === size * chunk; chunk i of input goes to rank i. */
  allToAll(input: CommBuffer, output: CommBuffer): Work;
  /** sendCounts[i] elements (contiguous, in rank order) go to rank i; recvCounts[i] come from rank i. */
  allToAllV(input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[]): Work;
  send(buf: CommBuffer, dst: number, tag?: number): Work;
  recv(buf: CommBuffer, src: number, tag?: number): Work;
  barrier(): Work;
  /** Sub-group from global ranks (called by every member, in the same order on all members). */
  newGroup(globalRanks: readonly number[], name?: string): Communicator;
  /** Clean shutdown (world communicator: closes connections; sub-groups: no-op). */
  destroy(): Promise<void>;
}

export class DistError extends Error {
  constructor(message: string) { super(message); this.name = 'DistError'; }
}

export function checkRank(what: string, r: number, size: number): void {
  if (!Number.isInteger(r) || r < 0 || r >= size) throw new DistError(`${what}: rank ${r} out of range [0, ${size})`);
}
