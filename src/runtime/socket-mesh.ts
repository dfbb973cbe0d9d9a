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
// The frame format and one peer's connection state live in socket-peer-link.ts.
import { LinkEmulator, type LinkSpec } from './link-emulation.js';
import net from 'node:net';
import { createHash } from 'node:crypto';
import type { TcpStore } from './tcp-store.js';
import { DistError } from './communicator.js';
import { PeerLink, HELLO_BYTES, HELLO_MAGIC, EMPTY, Kind, CTRL_STATUS_Q, CTRL_STATUS_R, CTRL_GOODBYE, CTRL_ABORT, CTRL_CMA_ACK, CTRL_CMA_NACK } from './socket-peer-link.js';
import type { GroupHooks, MsgHeader } from './socket-peer-link.js';

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
