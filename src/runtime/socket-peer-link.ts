// One peer's connections in the socket mesh (socket-mesh.ts): framing, the staging buffer,
// posted and unexpected receives, and the same-host single-copy (CMA) rendezvous.
//
// Frame header (32 bytes, little endian):
//   u32 magic | u32 group | u32 seq | u16 opcode | u16 kind | u32 step | u32 flags | u64 length
// With flags & FLAG_CMA, 16 more bytes follow instead of the payload:
//   u32 address low | u32 address high | u32 sender pid | u32 transfer id
// Messages are matched by (group, kind, seq, step) per sending peer; the opcode and length
// are then checked, which is how a collective mismatch between ranks is detected.
import net from 'node:net';
import { DistError } from './communicator.js';
import { nativeReduce } from './native-reduce.js';
import type { SocketMesh } from './socket-mesh.js';

export const HDR = 32;
export const MAGIC = 0x31485441; // 'ATH1'
export const HELLO_MAGIC = 0x4f4c4548; // 'HELO'
export const HELLO_BYTES = 48;

export const enum Kind { COLL = 0, P2P = 1, CTRL = 2 }
export const CTRL_STATUS_Q = 100, CTRL_STATUS_R = 101, CTRL_GOODBYE = 102, CTRL_ABORT = 103;
/** Same-host single-copy replies; the transfer id travels in the header's seq field. */
export const CTRL_CMA_ACK = 104, CTRL_CMA_NACK = 105;
export const FLAG_CMA = 1;
export const CMA_DESC = 16;
/** Collective messages from this size up take the single-copy path (ATHANOR_CMA=0 disables it). */
export const CMA_MIN = 128 << 10;
export const CMA_ENABLED = process.env.ATHANOR_CMA !== '0';
/** ATHANOR_CMA=refuse: receivers refuse every single-copy read (tests the inline fallback). */
export const CMA_REFUSE = process.env.ATHANOR_CMA === 'refuse';
export const EMPTY = new Uint8Array(0);

export const OPNAMES: Record<number, string> = {
  1: 'allreduce', 2: 'reducescatter', 3: 'allgather', 4: 'broadcast', 5: 'alltoall', 6: 'barrier', 7: 'send/recv',
};
export const opName = (code: number): string => OPNAMES[code] ?? `op${code}`;

export interface MsgHeader { group: number; kind: Kind; seq: number; opcode: number; step: number }

export interface PostedRecv {
  h: MsgHeader; dest: Uint8Array; resolve: () => void; reject: (e: Error) => void;
}
export interface CmaDesc { addr: number; pid: number; id: number; len: number }
export interface Unexpected { h: MsgHeader; data: Uint8Array; complete: boolean; waiter: PostedRecv | null; cma?: CmaDesc }
export interface CmaSend { h: MsgHeader; payload: Uint8Array; resolve: () => void; reject: (e: Error) => void }
export interface Sink { dest: Uint8Array; done: () => void }

export interface GroupHooks {
  /** A collective message arrived that no receive was posted for yet (for mismatch checks). */
  onUnexpected(from: number, h: MsgHeader): void;
  /** Report for the watchdog of another rank. */
  statusReport(): unknown;
  onPeerLost(peer: number, reason: string, clean: boolean): void;
  /** Called periodically by the mesh's watchdog tick. */
  tick(now: number): void;
  /** Another member gave up on the group (watchdog, mismatch, dead peer) and says why. */
  onRemoteAbort(from: number, message: string): void;
}

export const key = (h: MsgHeader): string => `${h.group}/${h.kind}/${h.seq}/${h.step}`;

export function encodeHeader(h: MsgHeader, len: number, cma?: CmaDesc): Buffer {
  const b = Buffer.allocUnsafe(cma ? HDR + CMA_DESC : HDR);
  b.writeUInt32LE(MAGIC, 0); b.writeUInt32LE(h.group >>> 0, 4); b.writeUInt32LE(h.seq >>> 0, 8);
  b.writeUInt16LE(h.opcode, 12); b.writeUInt16LE(h.kind, 14); b.writeUInt32LE(h.step >>> 0, 16);
  b.writeUInt32LE(cma ? FLAG_CMA : 0, 20); b.writeUInt32LE(len % 0x100000000, 24); b.writeUInt32LE(Math.floor(len / 0x100000000), 28);
  if (cma) {
    b.writeUInt32LE(cma.addr % 0x100000000, 32); b.writeUInt32LE(Math.floor(cma.addr / 0x100000000), 36);
    b.writeUInt32LE(cma.pid, 40); b.writeUInt32LE(cma.id, 44);
  }
  return b;
}

export class PeerLink {
  recvSock: net.Socket | null = null;
  sendSock: net.Socket | null = null;
  transport: 'tcp' | 'unix' = 'tcp';
  private staging = new Uint8Array(1 << 16);
  private dv = new DataView(this.staging.buffer);
  private sStart = 0;
  private sEnd = 0;
  private direct: { dest: Uint8Array; filled: number; done: () => void } | null = null;
  posted = new Map<string, PostedRecv>();
  unexpected = new Map<string, Unexpected>();
  dead: string | null = null;
  goodbye = false;
  /** Transport of the accepted (sending) connection; the single-copy path needs 'unix'. */
  sendVia: 'tcp' | 'unix' = 'tcp';
  /** Cleared for good after the peer could not read our memory once. */
  private cmaUsable = CMA_ENABLED;
  private cmaSends = new Map<number, CmaSend>();
  private nextCmaId = 1;

  constructor(readonly mesh: SocketMesh, readonly peer: number) {}

  nextBuffer(): Uint8Array {
    const d = this.direct;
    return d ? d.dest.subarray(d.filled) : this.staging.subarray(this.sEnd);
  }

  onRead(n: number): void {
    const d = this.direct;
    if (d) {
      d.filled += n;
      if (d.filled === d.dest.byteLength) { this.direct = null; d.done(); }
      return;
    }
    this.sEnd += n;
    const st = this.staging;
    while (this.sEnd - this.sStart >= HDR) {
      const o = this.sStart, dv = this.dv;
      if (dv.getUint32(o, true) !== MAGIC) { this.protocolError(`bad frame magic 0x${dv.getUint32(o, true).toString(16)}`); return; }
      const cma = (dv.getUint32(o + 20, true) & FLAG_CMA) !== 0;
      if (cma && this.sEnd - this.sStart < HDR + CMA_DESC) break;
      const h: MsgHeader = { group: dv.getUint32(o + 4, true), seq: dv.getUint32(o + 8, true), opcode: dv.getUint16(o + 12, true), kind: dv.getUint16(o + 14, true), step: dv.getUint32(o + 16, true) };
      const len = dv.getUint32(o + 24, true) + dv.getUint32(o + 28, true) * 0x100000000;
      this.sStart += HDR;
      if (cma) {
        const q = this.sStart;
        this.sStart += CMA_DESC;
        this.onCmaFrame(h, { addr: dv.getUint32(q, true) + dv.getUint32(q + 4, true) * 0x100000000, pid: dv.getUint32(q + 8, true), id: dv.getUint32(q + 12, true), len });
        continue;
      }
      const sink = this.sinkFor(h, len);
      const avail = this.sEnd - this.sStart;
      if (avail >= len) {
        if (len) sink.dest.set(st.subarray(this.sStart, this.sStart + len));
        this.sStart += len;
        sink.done();
      } else {
        if (avail) sink.dest.set(st.subarray(this.sStart, this.sEnd));
        this.sStart = this.sEnd;
        this.direct = { dest: sink.dest, filled: avail, done: sink.done };
        break;
      }
    }
    if (this.sStart === this.sEnd) { this.sStart = this.sEnd = 0; }
    else if (this.sStart > 0) { st.copyWithin(0, this.sStart, this.sEnd); this.sEnd -= this.sStart; this.sStart = 0; }
  }

  private protocolError(msg: string): void {
    this.lost(`protocol error from rank ${this.peer}: ${msg}`, false);
    this.recvSock?.destroy(); this.sendSock?.destroy();
  }

  private sinkFor(h: MsgHeader, len: number): Sink {
    if (h.kind === Kind.CTRL) {
      const dest = new Uint8Array(len);
      return { dest, done: () => this.mesh.onControl(this.peer, h, dest) };
    }
    const k = key(h);
    const p = this.posted.get(k);
    if (p) {
      this.posted.delete(k);
      const err = this.checkMatch(p.h, h, p.dest.byteLength, len);
      if (err) { p.reject(err); return { dest: new Uint8Array(len), done: () => {} }; }
      return { dest: p.dest, done: p.resolve };
    }
    if (h.kind === Kind.COLL) this.mesh.groupHooks.get(h.group)?.onUnexpected(this.peer, h);
    const u: Unexpected = { h, data: new Uint8Array(len), complete: false, waiter: null };
    this.unexpected.set(k, u);
    return {
      dest: u.data,
      done: () => {
        u.complete = true;
        if (u.waiter) { this.unexpected.delete(k); this.deliver(u, u.waiter); }
      },
    };
  }

  checkMatch(want: MsgHeader, got: MsgHeader, wantLen: number, gotLen: number): Error | null {
    if (want.opcode !== got.opcode) {
      return new DistError(`collective mismatch: this rank (${this.mesh.rank}) is in ${opName(want.opcode)}#${want.seq} but rank ${this.peer} sent ${opName(got.opcode)}#${got.seq}`);
    }
    if (wantLen !== gotLen) {
      return new DistError(`size mismatch in ${opName(want.opcode)}#${want.seq}: this rank (${this.mesh.rank}) expects ${wantLen} bytes from rank ${this.peer}, which sent ${gotLen} (do all ranks pass the same sizes/counts?)`);
    }
    return null;
  }

  private deliver(u: Unexpected, p: PostedRecv): void {
    const err = this.checkMatch(p.h, u.h, p.dest.byteLength, u.cma ? u.cma.len : u.data.byteLength);
    if (err) { if (u.cma) this.mesh.cmaReply(this.peer, u.cma.id, true); p.reject(err); return; }
    if (u.cma) { this.cmaPull(p, u.cma); return; }
    p.dest.set(u.data);
    p.resolve();
  }

  /** A single-copy descriptor arrived: read now if the receive is posted, else when it is. */
  private onCmaFrame(h: MsgHeader, d: CmaDesc): void {
    const k = key(h);
    const p = this.posted.get(k);
    if (p) {
      this.posted.delete(k);
      const err = this.checkMatch(p.h, h, p.dest.byteLength, d.len);
      if (err) { this.mesh.cmaReply(this.peer, d.id, true); p.reject(err); return; }
      this.cmaPull(p, d);
      return;
    }
    if (h.kind === Kind.COLL) this.mesh.groupHooks.get(h.group)?.onUnexpected(this.peer, h);
    this.unexpected.set(k, { h, data: EMPTY, complete: true, waiter: null, cma: d });
  }

  private cmaPull(p: PostedRecv, d: CmaDesc): void {
    const nr = nativeReduce();
    const got = nr && !CMA_REFUSE ? Number(nr.vmRead(d.pid, p.dest, d.addr, d.len)) : -1;
    if (got === d.len) {
      this.mesh.cmaReply(this.peer, d.id, true);
      p.resolve();
      return;
    }
    // Cannot read the peer's memory here: take the payload inline instead.
    this.posted.set(key(p.h), p);
    this.mesh.cmaReply(this.peer, d.id, false);
  }

  /** The peer's answer to one of our single-copy sends. */
  onCmaReply(id: number, ok: boolean): void {
    const c = this.cmaSends.get(id);
    if (!c) return;
    this.cmaSends.delete(id);
    if (ok) { c.resolve(); return; }
    this.cmaUsable = false;
    this.sendInline(c.h, c.payload).then(c.resolve, c.reject);
  }

  postRecv(h: MsgHeader, dest: Uint8Array): Promise<void> {
    if (this.dead) return Promise.reject(new DistError(this.dead));
    return new Promise<void>((resolve, reject) => {
      const p: PostedRecv = { h, dest, resolve, reject };
      const k = key(h);
      const u = this.unexpected.get(k);
      if (u) {
        if (u.complete) { this.unexpected.delete(k); this.deliver(u, p); }
        else u.waiter = p;
        return;
      }
      if (this.posted.has(k)) { reject(new DistError(`internal: duplicate receive posted for ${k} from rank ${this.peer}`)); return; }
      this.posted.set(k, p);
    });
  }

  send(h: MsgHeader, payload: Uint8Array): Promise<void> {
    const emu = this.mesh.emulation;
    if (emu) return emu.after(this.peer, HDR + payload.byteLength, () => this.sendNow(h, payload));
    return this.sendNow(h, payload);
  }

  private sendNow(h: MsgHeader, payload: Uint8Array): Promise<void> {
    if (this.cmaUsable && h.kind === Kind.COLL && payload.byteLength >= CMA_MIN && this.sendVia === 'unix') {
      const s = this.sendSock, nr = nativeReduce();
      if (nr && s && !this.dead) {
        const p = new Promise<void>((resolve, reject) => {
          const id = this.nextCmaId = (this.nextCmaId + 1) >>> 0 || 1;
          this.cmaSends.set(id, { h, payload, resolve, reject });
          s.write(encodeHeader(h, payload.byteLength, { addr: Number(nr.addr(payload)), pid: process.pid, id, len: payload.byteLength }), (e) => {
            if (e && this.cmaSends.delete(id)) reject(new DistError(this.dead ?? `sending to rank ${this.peer} failed: ${e.message}`));
          });
        });
        // This send stays pending until the peer has read it, so a dead peer rejects it after
        // the collective has already failed on a receive and stopped awaiting its sends.
        p.catch(() => {});
        return p;
      }
    }
    return this.sendInline(h, payload);
  }

  private sendInline(h: MsgHeader, payload: Uint8Array): Promise<void> {
    const s = this.sendSock;
    if (this.dead || !s) return handled(Promise.reject(new DistError(this.dead ?? `no connection to rank ${this.peer}`)));
    return handled(new Promise<void>((resolve, reject) => {
      const cb = (e?: Error | null): void => {
        if (e) reject(new DistError(this.dead ?? `sending to rank ${this.peer} failed: ${e.message}`));
        else resolve();
      };
      const len = payload.byteLength;
      if (len === 0) { s.write(encodeHeader(h, 0), cb); return; }
      s.cork();
      s.write(encodeHeader(h, len));
      s.write(payload, cb);
      s.uncork();
    }));
  }

  /** Cancels receives posted for one group/seq (after a watchdog abort). */
  cancel(group: number, seq: number, err: Error): void {
    for (const [k, p] of this.posted) if (p.h.group === group && p.h.seq === seq) { this.posted.delete(k); p.reject(err); }
  }

  lost(reason: string, clean: boolean): void {
    if (this.dead) return;
    this.dead = reason;
    const err = new DistError(reason);
    for (const p of this.posted.values()) p.reject(err);
    this.posted.clear();
    for (const u of this.unexpected.values()) if (u.waiter && !u.complete) u.waiter.reject(err);
    for (const c of this.cmaSends.values()) c.reject(err);
    this.cmaSends.clear();
    this.mesh.peerLost(this.peer, reason, clean);
  }
}

/**
 * Marks a send's promise as handled and returns it: a caller that awaits it still sees the
 * rejection, but a collective that already failed on a receive (and stopped awaiting its
 * sends) must not turn the peer's EPIPE into an unhandled rejection that kills the rank.
 */
export function handled(p: Promise<void>): Promise<void> {
  p.catch(() => {});
  return p;
}
