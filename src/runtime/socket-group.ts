// Communicator over the socket mesh: sequence numbers, mismatch detection, dead-peer
// fail-fast and the hang watchdog live here; the algorithms are in collectives.ts.
import type { AllReduceOptions, Backend, CommBuffer, Communicator, ReduceOp, Work } from './communicator.js';
import { DistError, WorkHandle, bytesOf, checkRank, dtypeOf } from './communicator.js';
import { Kind, opName } from './socket-peer-link.js';
import type { GroupHooks, MsgHeader } from './socket-peer-link.js';
import type { SocketMesh } from './socket-mesh.js';
import * as algo from './collectives.js';
import type { OpCtx, Tuning } from './collectives.js';
import { divideInPlace } from './reduce-kernels.js';

const OP = { allreduce: 1, reducescatter: 2, allgather: 3, broadcast: 4, alltoall: 5, barrier: 6, p2p: 7 } as const;

export interface GroupOptions {
  /** Seconds before an unfinished collective is reported and aborted. */
  watchdogS: number;
  /** 'throw' rejects the op (and every other in-flight op of the group); 'exit' also prints and exits(1). */
  watchdogAction: 'throw' | 'exit';
  tuning: Tuning;
}

interface OpState {
  name: string; seq: number; opcode: number; start: number;
  waitingOn: Map<number, number>;
  fail: (e: Error) => void;
  timingOut: boolean;
}

interface StatusReport { lastSeq: number; lastOp: string; completedSeq: number; inflight: string[] }

/** FNV-1a, for group ids that every member derives from the same rank list. */
export function groupIdOf(ranks: readonly number[], nth: number): number {
  let h = 0x811c9dc5;
  const s = `${ranks.join(',')}#${nth}`;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}

export class SocketGroup implements Communicator, GroupHooks {
  readonly rank: number;
  readonly size: number;
  private seq = 0;
  private completedSeq = 0;
  private lastOp = 'none';
  private inflight = new Map<number, OpState>();
  private nextOpId = 1;
  private aborted: Error | null = null;
  private p2pCounters = new Map<string, number>();
  private p2pSeq = 0x80000000;
  private created = new Map<string, number>();

  constructor(readonly mesh: SocketMesh, readonly ranks: readonly number[], readonly name: string, readonly id: number,
    readonly opts: GroupOptions, private readonly root: { created: Map<string, number> } | null = null) {
    this.rank = ranks.indexOf(mesh.rank);
    if (this.rank < 0) throw new DistError(`newGroup: rank ${mesh.rank} is not a member of group '${name}' (ranks ${ranks.join(',')})`);
    this.size = ranks.length;
    if (mesh.groupHooks.has(id)) throw new DistError(`newGroup: group id collision for '${name}'`);
    mesh.groupHooks.set(id, this);
  }

  get backend(): Backend {
    const t = this.mesh.transportName;
    return t === 'unix' ? 'unix' : t === 'local' ? 'local' : 'tcp';
  }

  private describe(): string { return `group '${this.name}' (ranks ${this.ranks.join(',')})`; }

  private run(opcode: number, label: string, body: (ctx: OpCtx) => Promise<void>, p2p?: { peer: number; seq: number }): Work {
    const seq = p2p ? p2p.seq : ++this.seq;
    const name = p2p ? label : opName(opcode);
    if (!p2p) this.lastOp = name;
    const me = this.mesh.rank;
    const where = p2p ? `${label} (${this.describe()})` : `${name}#${seq} in ${this.describe()}`;
    if (this.aborted) return new WorkHandle(name, seq, Promise.reject(new DistError(`rank ${me}: ${where}: group was aborted earlier: ${this.aborted.message}`)));
    if (!p2p) {
      // A conflicting message that already arrived is the better diagnosis, even if its
      // sender has exited since.
      const failEarly = (msg: string): Work => {
        const err = new DistError(msg);
        if (!this.aborted) { this.aborted = err; this.mesh.sendAbort(this.ranks, this.id, msg); }
        return new WorkHandle(name, seq, Promise.reject(err));
      };
      const c = this.mesh.findConflict(this.id, seq, opcode);
      if (c) return failEarly(`rank ${me}: collective mismatch in ${this.describe()}: this rank is in ${name}#${seq} but rank ${c.peer} sent ${opName(c.opcode)}#${seq}`);
      for (const g of this.ranks) {
        const dead = g !== me ? this.mesh.isDead(g) : null;
        if (dead) return failEarly(`rank ${me}: ${where}: ${dead}`);
      }
    }
    const st: OpState = { name, seq, opcode, start: Date.now(), waitingOn: new Map(), fail: () => {}, timingOut: false };
    const failP = new Promise<never>((_, rej) => { st.fail = rej; });
    failP.catch(() => {});
    const scratch: Uint8Array[] = [];
    const hdr = (step: number): MsgHeader => ({ group: this.id, kind: p2p ? Kind.P2P : Kind.COLL, seq, opcode, step });
    const ctx: OpCtx = {
      rank: this.rank, size: this.size,
      send: (peer, step, data) => this.mesh.send(this.ranks[peer]!, hdr(step), data),
      recv: (peer, step, dest) => {
        const g = this.ranks[peer]!;
        st.waitingOn.set(g, (st.waitingOn.get(g) ?? 0) + 1);
        return this.mesh.recv(g, hdr(step), dest).finally(() => {
          const n = (st.waitingOn.get(g) ?? 1) - 1;
          if (n <= 0) st.waitingOn.delete(g); else st.waitingOn.set(g, n);
        });
      },
      scratch: (bytes) => {
        const ab = this.mesh.pool.take(bytes);
        scratch.push(new Uint8Array(ab));
        return new Uint8Array(ab, 0, bytes);
      },
    };
    const opId = this.nextOpId++;
    this.inflight.set(opId, st);
    // Scratch goes back to the pool only after a clean finish: after a failure the socket
    // may still be writing into it.
    const p = Promise.race([body(ctx), failP]).then(
      () => { for (const b of scratch) this.mesh.pool.give(b.buffer as ArrayBuffer); this.inflight.delete(opId); if (!p2p) this.completedSeq = Math.max(this.completedSeq, seq); },
      (e: Error) => {
        this.inflight.delete(opId);
        this.mesh.cancel(this.id, seq, e);
        let msg = e.message.startsWith(`rank ${me}:`) ? e.message : `rank ${me}: ${where} failed: ${e.message}`;
        // Name the first rank that died, not just the neighbour whose loss we noticed.
        const dead = this.mesh.deathOrder.filter((g) => this.ranks.includes(g));
        if (dead.length && !msg.includes(`rank ${dead[0]} `) && !msg.includes(`rank ${dead[0]})`)) msg += ` (ranks lost so far, first to last: ${dead.join(', ')})`;
        const err = new DistError(msg);
        if (!this.aborted) {
          this.aborted = err;
          if (!(e as { remote?: boolean }).remote) this.mesh.sendAbort(this.ranks, this.id, msg);
        }
        throw err;
      });
    return new WorkHandle(name, seq, p);
  }

  // ---- GroupHooks -------------------------------------------------------------------------

  onUnexpected(from: number, h: MsgHeader): void {
    const st = [...this.inflight.values()].find((o) => o.seq === h.seq && o.opcode !== OP.p2p);
    if (st && h.kind === Kind.COLL && st.opcode !== h.opcode) {
      st.fail(new DistError(`rank ${this.mesh.rank}: collective mismatch in ${this.describe()}: this rank is in ${st.name}#${st.seq} but rank ${from} sent ${opName(h.opcode)}#${h.seq}`));
    }
  }

  onRemoteAbort(from: number, message: string): void {
    const me = this.mesh.rank;
    const err = Object.assign(new DistError(`rank ${me}: group '${this.name}' aborted by rank ${from}: ${message}`), { remote: true });
    if (!this.aborted) this.aborted = err;
    for (const o of this.inflight.values()) o.fail(err);
  }

  statusReport(): StatusReport {
    return { lastSeq: this.seq, lastOp: this.lastOp, completedSeq: this.completedSeq, inflight: [...this.inflight.values()].map((s) => `${s.name}#${s.seq}`) };
  }

  onPeerLost(peer: number, reason: string, clean: boolean): void {
    if (!this.ranks.includes(peer) || clean) return;
    // Receives posted from that peer already failed. Ops that never talk to it directly
    // (ring neighbours) cannot complete either; give in-flight ones a moment, then fail them.
    const started = [...this.inflight.values()];
    setTimeout(() => {
      for (const st of started) if ([...this.inflight.values()].includes(st)) st.fail(new DistError(`rank ${this.mesh.rank}: ${st.name}#${st.seq} in ${this.describe()}: ${reason}`));
    }, 1000).unref();
  }

  tick(now: number): void {
    const limit = this.opts.watchdogS * 1000;
    for (const st of this.inflight.values()) {
      if (!st.timingOut && now - st.start > limit) { st.timingOut = true; void this.onTimeout(st); }
    }
  }

  private async onTimeout(st: OpState): Promise<void> {
    const me = this.mesh.rank;
    const peers = this.ranks.filter((g) => g !== me);
    const reports = await Promise.all(peers.map((g) => this.mesh.isDead(g) ? Promise.resolve(undefined) : this.mesh.queryStatus(g, this.id, 2000)));
    if (![...this.inflight.values()].includes(st)) return; // finished while we were asking
    const missing: string[] = [];
    const isColl = st.opcode !== OP.p2p;
    peers.forEach((g, i) => {
      const r = reports[i] as StatusReport | null | undefined;
      if (r === undefined) missing.push(`${g} (${this.mesh.isDead(g) ?? 'no reply to status query: busy or hung'})`);
      else if (r === null) missing.push(`${g} (has not created this group)`);
      else if (isColl && r.lastSeq < st.seq) missing.push(`${g} (last started ${r.lastSeq ? `${r.lastOp}#${r.lastSeq}` : 'nothing'} in this group)`);
    });
    const waiting = [...st.waitingOn.keys()];
    const what = isColl ? `${st.name}#${st.seq}` : st.name;
    const msg = `athanor watchdog: rank ${me}: ${what} in ${this.describe()} did not complete within ${this.opts.watchdogS} s` +
      (isColl ? `; ranks that did not arrive: ${missing.length ? missing.join(', ') : 'none (all ranks entered it)'}` : '') +
      (waiting.length ? `; still waiting for data from rank(s) ${waiting.join(', ')}` : '') +
      ' (set ATHANOR_WATCHDOG_S to change the limit)';
    const err = new DistError(msg);
    if (this.aborted) return;
    this.aborted = err;
    this.mesh.sendAbort(this.ranks, this.id, msg);
    for (const o of this.inflight.values()) o.fail(o === st ? err : new DistError(`rank ${me}: ${o.name}#${o.seq} aborted: ${msg}`));
    if (this.opts.watchdogAction === 'exit') { process.stderr.write(`${msg}\n`); process.exit(1); }
  }

  // ---- collectives ------------------------------------------------------------------------

  allReduce(buf: CommBuffer, o?: AllReduceOptions | ReduceOp): Work {
    const opts: AllReduceOptions = typeof o === 'string' ? { op: o } : (o ?? {});
    const dtype = dtypeOf(buf), op = opts.op ?? 'sum';
    checkOp(dtype, op);
    return this.run(OP.allreduce, 'allreduce', async (ctx) => {
      if (buf.length === 0) return;
      if (this.size === 1) { if (op === 'avg') divideInPlace(dtype, buf, 1); return; }
      const small = buf.byteLength <= this.opts.tuning.directMaxBytes || buf.length < this.size;
      const alg = opts.algorithm ?? (small ? 'direct' : 'ring');
      if (alg === 'direct') await algo.allReduceDirect(ctx, dtype, op, buf, opts.deterministic ?? true);
      else await algo.allReduceRing(ctx, dtype, op, buf, this.opts.tuning);
    });
  }

  reduceScatter(input: CommBuffer, output: CommBuffer, op: ReduceOp = 'sum'): Work {
    if (input.length !== output.length * this.size) throw new DistError(`reduceScatter: input has ${input.length} elements, expected size*output = ${this.size}*${output.length}`);
    return this.reduceScatterV(input, output, new Array<number>(this.size).fill(output.length), op);
  }

  reduceScatterV(input: CommBuffer, output: CommBuffer, counts: readonly number[], op: ReduceOp = 'sum'): Work {
    const dtype = sameDtype('reduceScatter', input, output);
    checkOp(dtype, op);
    checkCounts('reduceScatterV', counts, this.size, input.length, 'input');
    if (output.length !== counts[this.rank]) throw new DistError(`reduceScatterV: output has ${output.length} elements, counts[${this.rank}] = ${counts[this.rank]}`);
    return this.run(OP.reducescatter, 'reducescatter', (ctx) => input.length === 0 ? Promise.resolve() : algo.reduceScatterRing(ctx, dtype, op, input, output, counts));
  }

  allGather(input: CommBuffer, output: CommBuffer): Work {
    if (output.length !== input.length * this.size) throw new DistError(`allGather: output has ${output.length} elements, expected size*input = ${this.size}*${input.length}`);
    return this.allGatherV(input, output, new Array<number>(this.size).fill(input.length));
  }

  allGatherV(input: CommBuffer, output: CommBuffer, counts: readonly number[]): Work {
    sameDtype('allGather', input, output);
    checkCounts('allGatherV', counts, this.size, output.length, 'output');
    if (input.length !== counts[this.rank]) throw new DistError(`allGatherV: input has ${input.length} elements, counts[${this.rank}] = ${counts[this.rank]}`);
    return this.run(OP.allgather, 'allgather', (ctx) => output.length === 0 ? Promise.resolve() : algo.allGatherRing(ctx, input, output, counts));
  }

  broadcast(buf: CommBuffer, root: number): Work {
    dtypeOf(buf);
    checkRank('broadcast root', root, this.size);
    return this.run(OP.broadcast, 'broadcast', (ctx) => buf.length === 0 ? Promise.resolve() : algo.broadcast(ctx, buf, root, this.opts.tuning));
  }

  allToAll(input: CommBuffer, output: CommBuffer): Work {
    if (input.length !== output.length || input.length % this.size !== 0) throw new DistError(`allToAll: input (${input.length}) and output (${output.length}) must have equal lengths divisible by the group size ${this.size}`);
    const c = new Array<number>(this.size).fill(input.length / this.size);
    return this.allToAllV(input, c, output, c);
  }

  allToAllV(input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[]): Work {
    sameDtype('allToAllV', input, output);
    checkCounts('allToAllV sendCounts', sendCounts, this.size, input.length, 'input');
    checkCounts('allToAllV recvCounts', recvCounts, this.size, output.length, 'output');
    return this.run(OP.alltoall, 'alltoall', (ctx) => algo.allToAllV(ctx, input, sendCounts, output, recvCounts));
  }

  barrier(): Work {
    return this.run(OP.barrier, 'barrier', (ctx) => algo.barrier(ctx));
  }

  send(buf: CommBuffer, dst: number, tag = 0): Work {
    dtypeOf(buf);
    checkRank('send', dst, this.size);
    if (dst === this.rank) throw new DistError(`send: rank ${this.rank} cannot send to itself`);
    const k = `s${dst}:${tag}`;
    const n = (this.p2pCounters.get(k) ?? 0) + 1;
    this.p2pCounters.set(k, n);
    return this.run(OP.p2p, `send to rank ${this.ranks[dst]} (tag ${tag}, #${n})`, (ctx) => ctx.send(dst, tag, bytesOf(buf)), { peer: dst, seq: (this.p2pSeq + n) >>> 0 });
  }

  recv(buf: CommBuffer, src: number, tag = 0): Work {
    dtypeOf(buf);
    checkRank('recv', src, this.size);
    if (src === this.rank) throw new DistError(`recv: rank ${this.rank} cannot receive from itself`);
    const k = `r${src}:${tag}`;
    const n = (this.p2pCounters.get(k) ?? 0) + 1;
    this.p2pCounters.set(k, n);
    return this.run(OP.p2p, `recv from rank ${this.ranks[src]} (tag ${tag}, #${n})`, (ctx) => ctx.recv(src, tag, bytesOf(buf)), { peer: src, seq: (this.p2pSeq + n) >>> 0 });
  }

  newGroup(globalRanks: readonly number[], name?: string): Communicator {
    const ranks = [...globalRanks];
    if (new Set(ranks).size !== ranks.length) throw new DistError(`newGroup: duplicate ranks in [${ranks.join(',')}]`);
    for (const r of ranks) checkRank('newGroup', r, this.mesh.world);
    const created = this.root?.created ?? this.created;
    const k = ranks.join(',');
    const nth = (created.get(k) ?? 0) + 1;
    created.set(k, nth);
    return new SocketGroup(this.mesh, ranks, name ?? `group[${k}]#${nth}`, groupIdOf(ranks, nth), this.opts, { created });
  }

  async destroy(): Promise<void> {
    this.mesh.groupHooks.delete(this.id);
    if (!this.root) await this.mesh.close();
  }
}

function checkOp(dtype: string, op: ReduceOp): void {
  if (op !== 'sum' && op !== 'avg' && op !== 'max') throw new DistError(`dist: unknown reduce op '${op as string}' (expected sum, avg or max)`);
  if (op === 'avg' && dtype === 'int32') throw new DistError("dist: op 'avg' is not supported for int32 buffers");
}

function sameDtype(what: string, a: CommBuffer, b: CommBuffer): ReturnType<typeof dtypeOf> {
  const da = dtypeOf(a), db = dtypeOf(b);
  if (da !== db) throw new DistError(`${what}: input is ${da} but output is ${db}`);
  return da;
}

function checkCounts(what: string, counts: readonly number[], size: number, total: number, buf: string): void {
  if (counts.length !== size) throw new DistError(`${what}: ${counts.length} counts for a group of ${size}`);
  let s = 0;
  for (const c of counts) { if (!Number.isInteger(c) || c < 0) throw new DistError(`${what}: bad count ${c}`); s += c; }
  if (s !== total) throw new DistError(`${what}: counts sum to ${s} but ${buf} has ${total} elements`);
}
