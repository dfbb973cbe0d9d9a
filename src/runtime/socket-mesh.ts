// Point-to-point layer for the socket transports: a full mesh of connections between ranks,
// TCP across hosts and Unix domain sockets (abstract namespace) within a host.
//
// Each ordered pair (i -> j) has its own connection: rank j *connects* to rank i's server and
// reads from that socket; rank i *writes* on the socket it accepted. Reading on the connecting
// side lets us use net's `onread` with a buffer callback, so payload bytes are read by the
// kernel straight into the destination typed array (no per-chunk allocation or copy) once the
// receive has been posted. Small messages share a 64 KiB staging buffer.
//
// Same-host single copy: a large collective message over a Unix socket is not written to the
// socket. The frame carries only where the payload lies in the sender's memory; the receiver,
// once its receive is posted, copies it straight into the destination with process_vm_readv
// (one copy instead of the socket's two) and answers CMA_ACK, which completes the send.
// Collectives keep their buffers alive and unmodified until their sends complete, so this
// rendezvous is safe for them; point-to-point sends stay eager (a user's send-then-recv on both
// sides must not deadlock). If the read fails (ptrace restrictions, a sandbox), the receiver
// answers CMA_NACK and the sender re-sends inline and stops using the path for that peer.
//
// Frame header (32 bytes, little endian):
//   u32 magic | u32 group | u32 seq | u16 opcode | u16 kind | u32 step | u32 flags | u64 length
// With flags & FLAG_CMA, 16 more bytes follow instead of the payload:
//   u32 address low | u32 address high | u32 sender pid | u32 transfer id
// Messages are matched by (group, kind, seq, step) per sending peer; the opcode and length
// are then checked, which is how a collective mismatch between ranks is detected.
import { LinkEmulator, type LinkSpec } from './link-emulation.js';
import net from 'node:net';
import { createHash } from 'node:crypto';
import type { TcpStore } from './tcp-store.js';
import { DistError } from './communicator.js';
import { nativeReduce } from './native-reduce.js';

export const HDR = 32;
const MAGIC = 0x31485441; // 'ATH1'
const HELLO_MAGIC = 0x4f4c4548; // 'HELO'
const HELLO_BYTES = 48;

export const enum Kind { COLL = 0, P2P = 1, CTRL = 2 }
export const CTRL_STATUS_Q = 100, CTRL_STATUS_R = 101, CTRL_GOODBYE = 102, CTRL_ABORT = 103;
/** Same-host single-copy replies; the transfer id travels in the header's seq field. */
export const CTRL_CMA_ACK = 104, CTRL_CMA_NACK = 105;
const FLAG_CMA = 1;
const CMA_DESC = 16;
/** Collective messages from this size up take the single-copy path (ATHANOR_CMA=0 disables it). */
const CMA_MIN = 128 << 10;
const CMA_ENABLED = process.env.ATHANOR_CMA !== '0';
/** ATHANOR_CMA=refuse: receivers refuse every single-copy read (tests the inline fallback). */
const CMA_REFUSE = process.env.ATHANOR_CMA === 'refuse';
const EMPTY = new Uint8Array(0);

export const OPNAMES: Record<number, string> = {
  1: 'allreduce', 2: 'reducescatter', 3: 'allgather', 4: 'broadcast', 5: 'alltoall', 6: 'barrier', 7: 'send/recv',
};
export const opName = (code: number): string => OPNAMES[code] ?? `op${code}`;

export interface MsgHeader { group: number; kind: Kind; seq: number; opcode: number; step: number }

interface PostedRecv {
  h: MsgHeader; dest: Uint8Array; resolve: () => void; reject: (e: Error) => void;
}
interface CmaDesc { addr: number; pid: number; id: number; len: number }
interface Unexpected { h: MsgHeader; data: Uint8Array; complete: boolean; waiter: PostedRecv | null; cma?: CmaDesc }
interface CmaSend { h: MsgHeader; payload: Uint8Array; resolve: () => void; reject: (e: Error) => void }
interface Sink { dest: Uint8Array; done: () => void }

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

const key = (h: MsgHeader): string => `${h.group}/${h.kind}/${h.seq}/${h.step}`;

function encodeHeader(h: MsgHeader, len: number, cma?: CmaDesc): Buffer {
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

class PeerLink {
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

export interface MeshOptions {
  rank: number;
  world: number;
  store: TcpStore;
  /** Store key prefix of this rendezvous (unique per process-group init). */
  prefix: string;
  token: string;
  backend: 'tcp' | 'unix' | 'auto';
  /** Address to bind the TCP server to (default: the interface that reaches the store). */
  bindAddr?: string;
  /** Address peers should dial (default: bindAddr, or the store-facing interface when binding 0.0.0.0). */
  advertiseAddr?: string;
  hostId: string;
  timeoutMs: number;
  /** Emulated network for benchmarks and tests (link-emulation.ts); absent = none. */
  emulate?: LinkSpec;
}

interface PeerAddr { hostId: string; tcp: { host: string; port: number } | null; unix: string | null }

/**
 * Reusable scratch memory for collectives: fresh large ArrayBuffers cost a zero-fill plus a
 * page fault per 4 KiB on first touch, which is comparable to the transfer itself.
 * Size classes are powers of two; at most `maxPerClass` idle buffers are kept per class.
 */
export class ScratchPool {
  private free = new Map<number, ArrayBuffer[]>();
  // 24 = up to 3 ring scratch buffers per channel x 8 channels (W > 3), reused across ops.
  constructor(private readonly maxPerClass = 24) {}
  private cls(bytes: number): number { return Math.max(64, 2 ** Math.ceil(Math.log2(Math.max(1, bytes)))); }
  take(bytes: number): ArrayBuffer {
    const c = this.cls(bytes);
    return this.free.get(c)?.pop() ?? new ArrayBuffer(c);
  }
  give(b: ArrayBuffer): void {
    const c = b.byteLength;
    if (c !== this.cls(c)) return;
    const l = this.free.get(c) ?? [];
    if (l.length < this.maxPerClass) { l.push(b); this.free.set(c, l); }
  }
  clear(): void { this.free.clear(); }
}

export class SocketMesh {
  readonly pool = new ScratchPool();
  readonly rank: number;
  readonly world: number;
  readonly links: (PeerLink | null)[];
  readonly groupHooks = new Map<number, GroupHooks>();
  private servers: net.Server[] = [];
  private statusWaiters = new Map<number, (r: unknown) => void>();
  private nextStatusId = 1;
  private closing = false;
  private tickTimer: NodeJS.Timeout | null = null;
  private transports = new Set<'tcp' | 'unix'>();
  /** Delays every send as an emulated link would (benchmarks and tests only). */
  readonly emulation: LinkEmulator | null;

  private constructor(o: MeshOptions) {
    this.rank = o.rank; this.world = o.world;
    this.emulation = o.emulate ? new LinkEmulator(o.emulate, o.rank) : null;
    this.links = Array.from({ length: o.world }, (_, i) => (i === o.rank ? null : new PeerLink(this, i)));
  }

  /** 'tcp', 'unix', or 'tcp+unix' when both are in use. */
  get transportName(): string { return [...this.transports].sort().join('+') || 'local'; }

  static async create(o: MeshOptions): Promise<SocketMesh> {
    const m = new SocketMesh(o);
    if (o.world > 1) await m.connectAll(o);
    m.tickTimer = setInterval(() => { const now = Date.now(); for (const g of m.groupHooks.values()) g.tick(now); }, 250);
    m.tickTimer.unref();
    return m;
  }

  private async connectAll(o: MeshOptions): Promise<void> {
    const secret = createHash('sha256').update(`${o.token}\0${o.prefix}`).digest();
    const accepted = new Set<number>();
    let onAllAccepted!: () => void, onAcceptFail!: (e: Error) => void;
    const allAccepted = new Promise<void>((res, rej) => { onAllAccepted = res; onAcceptFail = rej; });
    const onConn = (sock: net.Socket, via: 'tcp' | 'unix'): void => {
      if (via === 'tcp') sock.setNoDelay(true);
      let got = Buffer.alloc(0);
      sock.on('error', () => {});
      const onData = (chunk: Buffer): void => {
        got = Buffer.concat([got, chunk]);
        if (got.length < HELLO_BYTES) return;
        sock.off('data', onData);
        const peer = got.readUInt32LE(4);
        const ok = got.readUInt32LE(0) === HELLO_MAGIC && got.readUInt32LE(8) === o.world && peer < o.world && peer !== o.rank &&
          got.subarray(16, 48).equals(secret) && got.length === HELLO_BYTES && !accepted.has(peer);
        if (!ok) { sock.destroy(); return; }
        const link = this.links[peer]!;
        link.sendSock = sock;
        link.sendVia = via;
        accepted.add(peer);
        sock.on('data', () => { link.lost(`protocol error: rank ${peer} wrote on its receive-only connection`, false); sock.destroy(); });
        sock.on('close', () => this.onSockClose(link, 'send'));
        if (accepted.size === o.world - 1) onAllAccepted();
      };
      sock.on('data', onData);
    };
    const useTcp = o.backend !== 'unix';
    const useUnix = o.backend !== 'tcp';
    let tcpAddr: PeerAddr['tcp'] = null;
    let unixPath: string | null = null;
    if (useTcp) {
      const bind = o.bindAddr ?? o.store.localAddress;
      const srv = net.createServer((s) => onConn(s, 'tcp'));
      await new Promise<void>((res, rej) => { srv.once('error', rej); srv.listen(0, bind, () => { srv.off('error', rej); res(); }); });
      this.servers.push(srv);
      const adv = o.advertiseAddr ?? (bind === '0.0.0.0' || bind === '::' ? o.store.localAddress : bind);
      tcpAddr = { host: adv, port: (srv.address() as net.AddressInfo).port };
    }
    if (useUnix) {
      unixPath = `\0athanor-${createHash('sha256').update(`${o.prefix}\0${o.token}\0${process.pid}`).digest('hex').slice(0, 24)}-${o.rank}`;
      const srv = net.createServer((s) => onConn(s, 'unix'));
      await new Promise<void>((res, rej) => { srv.once('error', rej); srv.listen(unixPath!, () => { srv.off('error', rej); res(); }); });
      this.servers.push(srv);
    }
    const me: PeerAddr = { hostId: o.hostId, tcp: tcpAddr, unix: unixPath };
    await o.store.set(`${o.prefix}/addr/${o.rank}`, JSON.stringify(me));
    const addrs: PeerAddr[] = await Promise.all(Array.from({ length: o.world }, (_, r) =>
      r === o.rank ? me : o.store.getString(`${o.prefix}/addr/${r}`, o.timeoutMs).then((s) => JSON.parse(s) as PeerAddr)));
    const timer = setTimeout(() => onAcceptFail(new DistError(`rank ${o.rank}: timed out after ${o.timeoutMs} ms waiting for connections from ranks ${[...Array(o.world).keys()].filter((r) => r !== o.rank && !accepted.has(r)).join(', ')}`)), o.timeoutMs);
    try {
      await Promise.all(addrs.map((a, peer) => peer === o.rank ? null : this.dial(o, peer, a, me, secret)));
      await allAccepted;
    } finally { clearTimeout(timer); }
  }

  private dial(o: MeshOptions, peer: number, a: PeerAddr, me: PeerAddr, secret: Buffer): Promise<void> {
    const link = this.links[peer]!;
    const sameHost = a.hostId === me.hostId;
    let via: 'tcp' | 'unix';
    if (o.backend === 'unix') {
      if (!sameHost || !a.unix) throw new DistError(`rank ${o.rank}: backend 'unix' needs all ranks on one host, but rank ${peer} is on host '${a.hostId}' and this rank on '${me.hostId}'`);
      via = 'unix';
    } else if (o.backend === 'tcp') via = 'tcp';
    else via = sameHost && a.unix ? 'unix' : 'tcp';
    if (via === 'tcp' && !a.tcp) throw new DistError(`rank ${o.rank}: rank ${peer} has no TCP address`);
    link.transport = via;
    this.transports.add(via);
    return new Promise<void>((resolve, reject) => {
      const target = via === 'unix' ? { path: a.unix! } : { host: a.tcp!.host, port: a.tcp!.port };
      const sock = net.connect({ ...target, onread: { buffer: () => link.nextBuffer(), callback: (n: number) => { link.onRead(n); } } } as unknown as net.NetConnectOpts);
      const onErr = (e: Error): void => reject(new DistError(`rank ${o.rank}: cannot connect to rank ${peer} at ${via === 'unix' ? 'unix socket' : `${a.tcp!.host}:${a.tcp!.port}`}: ${e.message}`));
      sock.once('error', onErr);
      sock.once('connect', () => {
        sock.off('error', onErr);
        sock.on('error', () => {});
        if (via === 'tcp') sock.setNoDelay(true);
        link.recvSock = sock;
        sock.on('close', () => this.onSockClose(link, 'recv'));
        const hello = Buffer.alloc(HELLO_BYTES);
        hello.writeUInt32LE(HELLO_MAGIC, 0); hello.writeUInt32LE(o.rank, 4); hello.writeUInt32LE(o.world, 8);
        secret.copy(hello, 16);
        sock.write(hello, (e) => (e ? onErr(e) : resolve()));
      });
    });
  }

  private onSockClose(link: PeerLink, which: 'send' | 'recv'): void {
    if (this.closing) return;
    // The receive side carries the GOODBYE frame in order with the EOF, so it decides
    // whether the peer left cleanly; a lone send-side close is a fallback after a moment.
    if (which === 'send' && link.recvSock && !link.recvSock.destroyed) {
      setTimeout(() => this.onSockClose(link, 'recv'), 1000).unref();
      return;
    }
    link.lost(link.goodbye ? `rank ${link.peer} has shut down its process group` : `lost connection to rank ${link.peer} (process exited or was killed?)`, link.goodbye);
  }

  /** Peers lost so far, in the order their connections dropped. */
  readonly deathOrder: number[] = [];

  peerLost(peer: number, reason: string, clean: boolean): void {
    if (!clean) this.deathOrder.push(peer);
    for (const g of this.groupHooks.values()) g.onPeerLost(peer, reason, clean);
  }

  send(peer: number, h: MsgHeader, payload: Uint8Array): Promise<void> { return this.links[peer]!.send(h, payload); }
  recv(peer: number, h: MsgHeader, dest: Uint8Array): Promise<void> { return this.links[peer]!.postRecv(h, dest); }
  isDead(peer: number): string | null { return this.links[peer]?.dead ?? null; }

  /** Any already-arrived message of group/seq whose opcode differs (mismatch check at op start). */
  findConflict(group: number, seq: number, opcode: number): { peer: number; opcode: number } | null {
    for (const l of this.links) {
      if (!l) continue;
      for (const u of l.unexpected.values()) if (u.h.group === group && u.h.kind === Kind.COLL && u.h.seq === seq && u.h.opcode !== opcode) return { peer: l.peer, opcode: u.h.opcode };
    }
    return null;
  }

  cancel(group: number, seq: number, err: Error): void { for (const l of this.links) l?.cancel(group, seq, err); }

  onControl(from: number, h: MsgHeader, data: Uint8Array): void {
    if (h.opcode === CTRL_GOODBYE) { this.links[from]!.goodbye = true; return; }
    if (h.opcode === CTRL_CMA_ACK || h.opcode === CTRL_CMA_NACK) { this.links[from]!.onCmaReply(h.seq, h.opcode === CTRL_CMA_ACK); return; }
    const msg = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')) as { id: number; group: number; report?: unknown };
    if (h.opcode === CTRL_STATUS_Q) {
      const report = this.groupHooks.get(msg.group)?.statusReport() ?? null;
      this.sendControl(from, CTRL_STATUS_R, { id: msg.id, group: msg.group, report }).catch(() => {});
    } else if (h.opcode === CTRL_STATUS_R) {
      this.statusWaiters.get(msg.id)?.(msg.report);
    } else if (h.opcode === CTRL_ABORT) {
      this.groupHooks.get(msg.group)?.onRemoteAbort(from, (msg as unknown as { message: string }).message);
    }
  }

  /** Tells peers why this rank gave up on a group, so they fail with the root cause. */
  sendAbort(peers: readonly number[], group: number, message: string): void {
    for (const p of peers) if (p !== this.rank && !this.isDead(p)) this.sendControl(p, CTRL_ABORT, { id: 0, group, message }).catch(() => {});
  }

  /** Completes (ok) or refuses a peer's single-copy send. */
  cmaReply(peer: number, id: number, ok: boolean): void {
    const l = this.links[peer]!;
    if (l.dead) return;
    l.send({ group: 0, kind: Kind.CTRL, seq: id, opcode: ok ? CTRL_CMA_ACK : CTRL_CMA_NACK, step: 0 }, EMPTY).catch(() => {});
  }

  private sendControl(peer: number, opcode: number, obj: unknown): Promise<void> {
    return this.links[peer]!.send({ group: 0, kind: Kind.CTRL, seq: 0, opcode, step: 0 }, Buffer.from(JSON.stringify(obj), 'utf8'));
  }

  /** Asks a peer where it is in a group; undefined = no answer within timeoutMs, null = group unknown there. */
  queryStatus(peer: number, group: number, timeoutMs: number): Promise<unknown> {
    const id = this.nextStatusId++;
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.statusWaiters.delete(id); resolve(undefined); }, timeoutMs);
      this.statusWaiters.set(id, (r) => { clearTimeout(t); this.statusWaiters.delete(id); resolve(r); });
      this.sendControl(peer, CTRL_STATUS_Q, { id, group }).catch(() => { clearTimeout(t); this.statusWaiters.delete(id); resolve(undefined); });
    });
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    await Promise.all(this.links.map((l) => (l && !l.dead && l.sendSock ? l.send({ group: 0, kind: Kind.CTRL, seq: 0, opcode: CTRL_GOODBYE, step: 0 }, new Uint8Array(0)).catch(() => {}) : null)));
    for (const l of this.links) { l?.sendSock?.end(); }
    for (const l of this.links) { l?.recvSock?.destroy(); }
    for (const s of this.servers) s.close();
  }
}

/**
 * Marks a send's promise as handled and returns it: a caller that awaits it still sees the
 * rejection, but a collective that already failed on a receive (and stopped awaiting its
 * sends) must not turn the peer's EPIPE into an unhandled rejection that kills the rank.
 */
function handled(p: Promise<void>): Promise<void> {
  p.catch(() => {});
  return p;
}
