// Non-blocking MPI for the communication thread (comm-worker.ts) under mpirun.
//
// The thread posts MPI_I* operations as requests arrive and polls them with MPI_Test, so any
// number of collectives and sends/receives (TP, PP, DP groups at once) are in flight without
// one blocked OS thread each, and the thread itself never blocks inside MPI: it keeps
// answering the other ranks' watchdog status queries, which is how a hung collective or
// point-to-point names the ranks that did not arrive. Open MPI progresses requests only inside
// MPI calls (no progress thread), so polling is what moves data; the worker spins while
// operations are in flight and backs off to short sleeps when nothing completes.
//
// Each group owns a communicator created from the thread's duplicate of MPI_COMM_WORLD
// (MPI_Comm_create_group over the members), so the thread's traffic never matches the main
// thread's. Status queries travel on a second duplicate.
import { mpiAbortJob, mpiApi, exclusiveScan, widen, narrowInto, groupTag, type MpiApi } from './mpi.js';
import type { CommBuffer, CommDType, ReduceOp } from './communicator.js';
import { DistError, checkRank, dtypeOf } from './communicator.js';
import { divideInPlace } from './reduce-kernels.js';

const IN_PLACE = 1n;
const ANY_SOURCE = -1;
const TAG_QUERY = 1, TAG_REPLY = 2;
/** Seconds a watchdog waits for the peers' status replies before reporting without them. */
const STATUS_WAIT_S = 3;
const OPCODES = ['none', 'allreduce', 'reducescatter', 'allgather', 'broadcast', 'alltoall', 'barrier'] as const;
type OpName = typeof OPCODES[number];

export type Done = (err: Error | null) => void;

interface P2P { kind: 'send' | 'recv'; peer: number; tag: number; n: number }

interface Op {
  label: string;
  group: EngineGroup;
  req: BigUint64Array;
  start: number;
  /** Buffers MPI reads or writes until completion (kept reachable). */
  keep: unknown[];
  finish: (() => void) | null;
  done: Done;
  seq: number;
  p2p: P2P | null;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void { Atomics.wait(sleeper, 0, 0, ms); }

export class MpiEngine {
  readonly a: MpiApi;
  readonly groups = new Map<number, EngineGroup>();
  ops: Op[] = [];
  private readonly flag = [0];
  /** MPI_Status (24 bytes in Open MPI): MPI_SOURCE is the first int. */
  private readonly status = new Int32Array(8);
  private readonly qbuf = new Int32Array(4);
  private readonly qreq = new BigUint64Array(1);
  private replies: { req: BigUint64Array; buf: Int32Array }[] = [];

  constructor(readonly worldRank: number, private readonly statusComm: bigint, readonly watchdogS: number) {
    this.a = mpiApi();
    this.postQuery();
  }

  check(rc: number, what: string): void {
    if (rc !== 0) throw new DistError(`rank ${this.worldRank}: ${what}: MPI error code ${rc}`);
  }

  /** Tests every in-flight operation once; returns how many completed. */
  poll(): number {
    this.serveQueries();
    let n = 0;
    const f = this.a.fns;
    for (let i = 0; i < this.ops.length;) {
      const op = this.ops[i]!;
      this.check(f.test!(op.req, this.flag, null), 'MPI_Test');
      if (!this.flag[0]) { i++; continue; }
      this.ops.splice(i, 1);
      n++;
      let err: Error | null = null;
      try { op.finish?.(); } catch (e) { err = e as Error; }
      op.done(err);
    }
    if (this.ops.length) this.watchdog(Date.now());
    return n;
  }

  private postQuery(): void {
    const a = this.a;
    this.check(a.fns.irecv!(this.qbuf, 4, a.h.int, ANY_SOURCE, TAG_QUERY, this.statusComm, this.qreq), 'MPI_Irecv (status)');
  }

  /** Answers other ranks' watchdog queries: [group id, _, tag, _] -> [known, last collective seq, last op, sends to them on tag, receives from them on tag]. */
  private serveQueries(): void {
    const a = this.a, f = a.fns;
    for (;;) {
      this.check(f.test!(this.qreq, this.flag, this.status), 'MPI_Test (status)');
      if (!this.flag[0]) break;
      const from = this.status[0]!;
      const [gid, , tag] = this.qbuf;
      const g = this.groups.get(gid!);
      const buf = new Int32Array(6);
      if (g) {
        const peer = g.ranks.indexOf(from);
        buf.set([1, g.seq, g.lastOp, g.count('send', peer, tag!), g.count('recv', peer, tag!)]);
      }
      const req = new BigUint64Array(1);
      this.check(f.isend!(buf, 6, a.h.int, from, TAG_REPLY, this.statusComm, req), 'MPI_Isend (status)');
      this.replies.push({ req, buf });
      this.postQuery();
    }
    if (this.replies.length) {
      this.replies = this.replies.filter((r) => { this.check(f.test!(r.req, this.flag, null), 'MPI_Test (status)'); return !this.flag[0]; });
    }
  }

  private watchdog(now: number): void {
    const limit = this.watchdogS * 1000;
    const op = this.ops.find((o) => now - o.start > limit);
    if (!op) return;
    const a = this.a, f = a.fns;
    const g = op.group, me = this.worldRank;
    const peers = op.p2p ? [g.ranks[op.p2p.peer]!] : g.ranks.filter((r) => r !== me);
    const asks = peers.map((p) => {
      const buf = new Int32Array(6), rreq = new BigUint64Array(1), sreq = new BigUint64Array(1);
      const q = Int32Array.from([g.id, 0, op.p2p?.tag ?? 0, 0]);
      this.check(f.irecv!(buf, 6, a.h.int, p, TAG_REPLY, this.statusComm, rreq), 'MPI_Irecv (status)');
      this.check(f.isend!(q, 4, a.h.int, p, TAG_QUERY, this.statusComm, sreq), 'MPI_Isend (status)');
      return { p, buf, rreq, sreq, q, got: false };
    });
    const deadline = Date.now() + STATUS_WAIT_S * 1000;
    while (Date.now() < deadline && asks.some((x) => !x.got)) {
      this.serveQueries();
      for (const x of asks) if (!x.got) { this.check(f.test!(x.rreq, this.flag, null), 'MPI_Test (status)'); x.got = this.flag[0] === 1; }
      sleepMs(1);
    }
    const missing: string[] = [];
    for (const x of asks) {
      const [known, seq, last, sent, recvd] = x.buf;
      if (!x.got) { missing.push(`${x.p} (no reply to status query: its communication thread is hung or gone)`); continue; }
      if (!known) { missing.push(`${x.p} (has not created this group)`); continue; }
      if (op.p2p) {
        const { kind, tag, n } = op.p2p;
        if (kind === 'recv' && sent! < n) missing.push(`${x.p} (has sent ${sent} message(s) with tag ${tag} to rank ${me} in this group; this is receive #${n})`);
        if (kind === 'send' && recvd! < n) missing.push(`${x.p} (has posted ${recvd} receive(s) with tag ${tag} from rank ${me} in this group; this is send #${n})`);
      } else if (seq! < op.seq) {
        missing.push(`${x.p} (last started ${seq ? `${OPCODES[last!] ?? 'op'}#${seq}` : 'nothing'} in this group)`);
      }
    }
    mpiAbortJob(`athanor watchdog: rank ${me}: ${op.label} in group '${g.name}' (mpi, communication thread, ranks ${g.ranks.join(',')}) did not complete within ${this.watchdogS} s; ` +
      `ranks that did not arrive: ${missing.length ? missing.join(', ') : 'none (all ranks entered it)'} (set ATHANOR_WATCHDOG_S to change the limit); aborting the MPI job`);
  }

  /** Cancels the status receive (before MPI_Finalize). */
  shutdown(): void {
    const f = this.a.fns;
    f.cancel!(this.qreq);
    for (let i = 0; i < 1000; i++) { f.test!(this.qreq, this.flag, null); if (this.flag[0]) break; sleepMs(1); }
  }
}

export class EngineGroup {
  readonly rank: number;
  readonly size: number;
  seq = 0;
  lastOp = 0;
  private readonly counts = new Map<string, number>();

  constructor(private readonly engine: MpiEngine, readonly id: number, readonly ranks: readonly number[], readonly name: string, readonly comm: bigint) {
    this.rank = ranks.indexOf(engine.worldRank);
    this.size = ranks.length;
    engine.groups.set(id, this);
  }

  count(kind: 'send' | 'recv', peer: number, tag: number): number { return this.counts.get(`${kind}${peer}:${tag}`) ?? 0; }

  private dt(d: CommDType): bigint { const h = this.engine.a.h; return d === 'float32' ? h.float : d === 'int32' ? h.int : h.u16; }
  private mop(op: ReduceOp, d: CommDType): bigint {
    if (op !== 'sum' && op !== 'avg' && op !== 'max') throw new DistError(`dist: unknown reduce op '${op as string}' (expected sum, avg or max)`);
    if (op === 'avg' && d === 'int32') throw new DistError("dist: op 'avg' is not supported for int32 buffers");
    return op === 'max' ? this.engine.a.h.max : this.engine.a.h.sum;
  }

  private post(what: OpName | P2P, name: string, issue: (req: BigUint64Array) => number, keep: unknown[], finish: (() => void) | null, done: Done): void {
    let label = name, seq = 0, p2p: P2P | null = null;
    if (typeof what === 'string') {
      seq = ++this.seq;
      this.lastOp = OPCODES.indexOf(what);
      label = `${name}#${seq}`;
    } else {
      const k = `${what.kind}${what.peer}:${what.tag}`;
      what.n = (this.counts.get(k) ?? 0) + 1;
      this.counts.set(k, what.n);
      p2p = what;
      label = `${name} (tag ${what.tag}, #${what.n})`;
    }
    const req = new BigUint64Array(1);
    this.engine.check(issue(req), `${label} in group '${this.name}'`);
    this.engine.ops.push({ label, group: this, req, start: Date.now(), keep, finish, done, seq, p2p });
  }

  allReduce(buf: CommBuffer, op: ReduceOp, done: Done): void {
    const d = dtypeOf(buf), mop = this.mop(op, d), f = this.engine.a.fns, h = this.engine.a.h;
    if (d === 'bfloat16') {
      // MPI has no bfloat16: reduce widened to float32, round once.
      const wide = widen(buf as Uint16Array);
      this.post('allreduce', 'allreduce', (req) => f.iallreduce!(IN_PLACE, wide, wide.length, h.float, mop, this.comm, req), [wide, buf],
        () => narrowInto(wide, buf as Uint16Array, op === 'avg' ? this.size : 1), done);
      return;
    }
    this.post('allreduce', 'allreduce', (req) => f.iallreduce!(IN_PLACE, buf, buf.length, this.dt(d), mop, this.comm, req), [buf],
      op === 'avg' ? () => divideInPlace(d, buf, this.size) : null, done);
  }

  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op: ReduceOp, done: Done): void {
    const d = dtypeOf(input), mop = this.mop(op, d), f = this.engine.a.fns, h = this.engine.a.h;
    if (dtypeOf(output) !== d) throw new DistError(`reduceScatterV: input is ${d} but output is ${dtypeOf(output)}`);
    checkCounts('reduceScatterV', counts, this.size, input.length, 'input');
    if (output.length !== counts[this.rank]) throw new DistError(`reduceScatterV: output has ${output.length} elements, counts[${this.rank}] = ${counts[this.rank]}`);
    const c = Int32Array.from(counts);
    if (d === 'bfloat16') {
      const wi = widen(input as Uint16Array), wo = new Float32Array(output.length);
      this.post('reducescatter', 'reducescatter', (req) => f.ireduceScatter!(wi, wo, c, h.float, mop, this.comm, req), [wi, wo, c, output],
        () => narrowInto(wo, output as Uint16Array, op === 'avg' ? this.size : 1), done);
      return;
    }
    // MPI forbids aliased send and receive buffers (the socket path allows the own segment).
    const src = overlaps(input, output) ? input.slice() : input;
    this.post('reducescatter', 'reducescatter', (req) => f.ireduceScatter!(src, output, c, this.dt(d), mop, this.comm, req), [src, output, c],
      op === 'avg' ? () => divideInPlace(d, output, this.size) : null, done);
  }

  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[], done: Done): void {
    const d = dtypeOf(input), f = this.engine.a.fns;
    if (dtypeOf(output) !== d) throw new DistError(`allGatherV: input is ${d} but output is ${dtypeOf(output)}`);
    checkCounts('allGatherV', counts, this.size, output.length, 'output');
    if (input.length !== counts[this.rank]) throw new DistError(`allGatherV: input has ${input.length} elements, counts[${this.rank}] = ${counts[this.rank]}`);
    const c = Int32Array.from(counts), disp = exclusiveScan(counts);
    const src = overlaps(input, output) ? input.slice() : input;
    this.post('allgather', 'allgather', (req) => f.iallgatherv!(src, src.length, this.dt(d), output, c, disp, this.dt(d), this.comm, req), [src, output, c, disp], null, done);
  }

  broadcast(buf: CommBuffer, root: number, done: Done): void {
    const d = dtypeOf(buf);
    checkRank('broadcast root', root, this.size);
    this.post('broadcast', 'broadcast', (req) => this.engine.a.fns.ibcast!(buf, buf.length, this.dt(d), root, this.comm, req), [buf], null, done);
  }

  allToAllV(input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[], done: Done): void {
    const d = dtypeOf(input);
    if (dtypeOf(output) !== d) throw new DistError(`allToAllV: input is ${d} but output is ${dtypeOf(output)}`);
    checkCounts('allToAllV sendCounts', sendCounts, this.size, input.length, 'input');
    checkCounts('allToAllV recvCounts', recvCounts, this.size, output.length, 'output');
    const sc = Int32Array.from(sendCounts), sd = exclusiveScan(sendCounts), rc = Int32Array.from(recvCounts), rd = exclusiveScan(recvCounts);
    const src = overlaps(input, output) ? input.slice() : input;
    this.post('alltoall', 'alltoall', (req) => this.engine.a.fns.ialltoallv!(src, sc, sd, this.dt(d), output, rc, rd, this.dt(d), this.comm, req), [src, output, sc, sd, rc, rd], null, done);
  }

  barrier(done: Done): void {
    this.post('barrier', 'barrier', (req) => this.engine.a.fns.ibarrier!(this.comm, req), [], null, done);
  }

  send(buf: CommBuffer, dst: number, tag: number, done: Done): void {
    const d = dtypeOf(buf);
    checkRank('send', dst, this.size);
    if (dst === this.rank) throw new DistError(`send: rank ${this.rank} cannot send to itself`);
    this.post({ kind: 'send', peer: dst, tag, n: 0 }, `send to rank ${this.ranks[dst]}`, (req) => this.engine.a.fns.isend!(buf, buf.length, this.dt(d), dst, tag, this.comm, req), [buf], null, done);
  }

  recv(buf: CommBuffer, src: number, tag: number, done: Done): void {
    const d = dtypeOf(buf);
    checkRank('recv', src, this.size);
    if (src === this.rank) throw new DistError(`recv: rank ${this.rank} cannot receive from itself`);
    this.post({ kind: 'recv', peer: src, tag, n: 0 }, `recv from rank ${this.ranks[src]}`, (req) => this.engine.a.fns.irecv!(buf, buf.length, this.dt(d), src, tag, this.comm, req), [buf], null, done);
  }

  /**
   * Sub-group of this group's members (global ranks). MPI_Comm_create_group is blocking and
   * collective over the new group's members only; Open MPI keeps progressing this thread's
   * in-flight requests while it waits.
   */
  newGroup(globalRanks: readonly number[], name: string, id: number): EngineGroup {
    const local = globalRanks.map((g) => { const i = this.ranks.indexOf(g); if (i < 0) throw new DistError(`newGroup: rank ${g} is not in group '${this.name}'`); return i; });
    if (!globalRanks.includes(this.engine.worldRank)) throw new DistError(`newGroup: rank ${this.engine.worldRank} is not a member of [${globalRanks.join(',')}]`);
    const a = this.engine.a, f = a.fns;
    const g = new BigUint64Array(1), ng = new BigUint64Array(1), nc = new BigUint64Array(1);
    this.engine.check(f.commGroup!(this.comm, g), 'MPI_Comm_group');
    this.engine.check(f.groupIncl!(g[0]!, local.length, Int32Array.from(local), ng), 'MPI_Group_incl');
    this.engine.check(f.commCreateGroup!(this.comm, ng[0]!, groupTag(globalRanks), nc), `MPI_Comm_create_group for '${name}'`);
    return new EngineGroup(this.engine, id, [...globalRanks], name, nc[0]!);
  }
}

function overlaps(a: CommBuffer, b: CommBuffer): boolean {
  if (a.buffer !== b.buffer) return false;
  return a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength;
}

function checkCounts(what: string, counts: readonly number[], size: number, total: number, buf: string): void {
  if (counts.length !== size) throw new DistError(`${what}: ${counts.length} counts for a group of ${size}`);
  let s = 0;
  for (const c of counts) { if (!Number.isInteger(c) || c < 0) throw new DistError(`${what}: bad count ${c}`); s += c; }
  if (s !== total) throw new DistError(`${what}: counts sum to ${s} but ${buf} has ${total} elements`);
}
