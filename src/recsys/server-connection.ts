// One embedding server's connection, for the client. Requests are kept (with their
// encoded frames) until answered, so that with reconnection enabled a lost connection is
// reopened with backoff and every unanswered request is resent, in order, to the server
// that replaced it (failover: updates since that server's checkpoint are lost, nothing else).
import { connect as netConnect, type Socket } from 'node:net';
import type { ServerInfo } from './embedding-server.js';
import { FRAME_SHM, HEADER_BYTES, MsgType, PRE_AUTH_MAX_PAYLOAD, ProtocolError, RESPONSE, decodeJson, encodeFrame, encodeJsonFrame, writeHeader, type ShmDescriptor } from './protocol.js';
import { ReplyReader } from './reply-reader.js';
import { ShmRing, createShmRegion, type ShmRegion } from './shm-region.js';

export interface EmbeddingEndpoint { host?: string; port: number }

export interface Reply { type: number; payload: Uint8Array }

/** How a client rides over a server restart (failover). */
export interface ReconnectOptions {
  /** Give up (fail every waiting request) after this long without a server (default 60 s). */
  timeoutMs?: number;
  /** First retry delay, doubled per try up to maxDelayMs (defaults 50 and 2000 ms). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Where shard i is now (a restarted server may listen on another port); default: where it was. */
  resolve?: (shard: number) => EmbeddingEndpoint;
  /** Called once a connection is back, with the restarted server's hello. */
  onReconnect?: (shard: number, info: ServerInfo, downMs: number) => void;
}

function openSocket(ep: EmbeddingEndpoint | { path: string }, timeoutMs: number): Promise<Socket> {
  const where = 'path' in ep ? `Unix socket ${JSON.stringify(ep.path)}` : `${ep.host ?? '127.0.0.1'}:${ep.port}`;
  return new Promise((resolve, reject) => {
    const s = 'path' in ep ? netConnect({ path: ep.path }) : netConnect({ host: ep.host ?? '127.0.0.1', port: ep.port });
    const t = setTimeout(() => { s.destroy(); reject(new Error(`embedding client: connecting to ${where} timed out`)); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.removeAllListeners('error'); resolve(s); });
    s.once('error', (e) => { clearTimeout(t); reject(new Error(`embedding client: ${where}: ${e.message}`)); });
  });
}

/** Hosts that name this machine: a server there may offer a Unix socket (ServerInfo.unixSocket). */
function isLoopback(host: string | undefined): boolean {
  return host === undefined || host === 'localhost' || host === '::1' || /^127\./.test(host);
}

interface Pending {
  /** Called with an answer of the request's type | RESPONSE (anything else is rejected first). */
  frame: Buffer; type: number; resolve: (r: Reply) => void; reject: (e: Error) => void;
  /** A FRAME_SHM request: where its answer may be written in the region. */
  shm?: { respOff: number; respCap: number };
}

/**
 * One server's connection. Requests are kept (with their encoded frames) until answered,
 * so that with reconnection enabled a lost connection is reopened with backoff and every
 * unanswered request is sent again, in order, to the server that replaced it.
 */
export class ServerConnection {
  info!: ServerInfo;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private sock: Socket | null = null;
  private reader = new ReplyReader(PRE_AUTH_MAX_PAYLOAD);
  private failure: Error | null = null;
  private closed = false;
  private reconnecting = false;
  private helloId = 0;
  /** Shared memory with a server on this host (attachShm); null: everything goes over the socket. */
  private shm: { region: ShmRegion; ring: ShmRing } | null = null;
  /** Frames written in this tick, sent together on the next (send). */
  private out: Buffer[] = [];
  /** Set while open() chooses the connection: requests wait in `pending` and go out after the hello. */
  private opening = false;

  /** Whether the connection in use is the server's Unix socket (a server on this host) rather than TCP. */
  unix = false;

  /** `useUnix: false` keeps a client on this host on TCP loopback (EmbeddingClientOptions.unixSocket). */
  constructor(readonly shard: number, private ep: EmbeddingEndpoint, private readonly token: string,
    private readonly timeoutMs: number, private readonly re: ReconnectOptions | null, private readonly useUnix = true) {}

  get name(): string { return `embedding server ${this.shard} (${this.ep.host ?? '127.0.0.1'}:${this.ep.port})`; }

  /**
   * Opens the socket and authenticates; returns the server's hello. A server on this host
   * that offers a Unix socket is asked again there, and the TCP connection is closed before
   * anything else is sent: requests waiting from a lost connection go out once, on the
   * connection that stays.
   */
  async open(): Promise<ServerInfo> {
    const tcp = await openSocket(this.ep, this.timeoutMs);
    if (this.closed) { tcp.destroy(); throw new Error(`${this.name}: client closed`); }
    tcp.setNoDelay(true);
    this.unix = false;
    // Nothing but the hellos goes out until the connection is chosen (send() holds frames back).
    this.opening = true;
    try {
      return await this.openOn(tcp);
    } finally {
      this.opening = false;
    }
  }

  private async openOn(tcp: Socket): Promise<ServerInfo> {
    let info = await this.hello(tcp);
    // Only a connection that reached the server itself: through a forwarder (another port) the
    // client stays on the path it was given, so a proxy that emulates the network is not bypassed.
    if (this.useUnix && info.unixSocket && isLoopback(this.ep.host) && !forwarded(info, this.ep)) {
      let local: Socket | null = null;
      try {
        local = await openSocket({ path: info.unixSocket }, this.timeoutMs);
      } catch {
        // Another network namespace, or the server is going away: TCP it is.
      }
      if (local && !this.closed) {
        this.sock = null; // the TCP socket's close is not a lost server
        tcp.destroy();
        const prev = info;
        info = await this.hello(local);
        if (info.shardIndex !== prev.shardIndex || info.numShards !== prev.numShards || info.step < prev.step) {
          local.destroy();
          throw new Error(`${this.name}: its Unix socket answered as another server`);
        }
        this.unix = true;
      } else local?.destroy();
    }
    if (this.closed) throw new Error(`${this.name}: client closed`);
    this.info = info;
    // Every unanswered request (from a lost connection, or made while this one opened) follows
    // the hello in order; a restarted server maps our region again before they reach it.
    const sock = this.sock!;
    const waiting = [...this.pending.values()];
    this.out = [];
    const attach = this.shm ? this.enqueue((id) => encodeJsonFrame(MsgType.SHM_ATTACH, id, this.attachBody()), MsgType.SHM_ATTACH, false) : null;
    if (attach) sock.write(attach.frame);
    for (const p of waiting) if (p.frame.length > 0) sock.write(p.frame);
    if (attach) await attach.reply;
    return this.info;
  }

  /** Makes `sock` the connection, sends the token and returns the server's hello. */
  private async hello(sock: Socket): Promise<ServerInfo> {
    this.sock = sock;
    this.reader = new ReplyReader(PRE_AUTH_MAX_PAYLOAD);
    this.out = [];
    sock.on('data', (chunk: Buffer) => {
      try {
        this.reader.push(chunk, (h, payload) => {
          const p = this.pending.get(h.requestId);
          if (!p) return;
          this.pending.delete(h.requestId);
          if (h.type === (MsgType.ERROR | RESPONSE)) p.reject(new Error(`${this.name}: ${Buffer.from(payload).toString('utf8')}`));
          else if (h.type !== (p.type | RESPONSE)) p.reject(new Error(`${this.name}: reply type ${h.type} to request type ${p.type}`));
          else if ((h.flags & FRAME_SHM) !== 0) {
            // The answer is in our region: the frame says how long it is.
            const len = payload.byteLength === 8 ? new DataView(payload.buffer, payload.byteOffset, 8).getUint32(0, true) : -1;
            if (!p.shm || !this.shm || len < 0 || len > p.shm.respCap) throw new ProtocolError(`shared-memory answer (${len} bytes) to a request that left no room for it`);
            p.resolve({ type: h.type, payload: this.shm.region.map.bytes.subarray(p.shm.respOff, p.shm.respOff + len) });
          } else p.resolve({ type: h.type, payload });
        });
      } catch (e) {
        // A protocol error is not a dead server: no reconnect.
        this.fail(new Error(`${this.name}: ${e instanceof Error ? e.message : String(e)}`));
        sock.destroy();
      }
    });
    sock.on('error', () => undefined); // 'close' follows
    sock.on('close', () => { if (this.sock === sock) this.lost(new Error(`${this.name}: connection closed`)); });
    const hello = this.enqueue((id) => encodeFrame(MsgType.AUTH, id, Buffer.from(this.token, 'utf8')), MsgType.AUTH, false);
    this.helloId = hello.id;
    sock.write(hello.frame);
    const r = await hello.reply;
    const info = decodeJson(r.payload, 'auth reply') as ServerInfo;
    this.reader.maxPayload = info.maxFrameBytes - HEADER_BYTES;
    return info;
  }

  private attachBody(): unknown {
    const r = this.shm!.region;
    return { pid: r.pid, fd: r.fd, bytes: r.map.bytes.byteLength, nonce: r.nonce };
  }

  /**
   * Shares a region of `bytes` with the server, if it runs on this host and both sides can
   * map it; true when lookups and pushes will travel through it (requestShm). Call once,
   * right after open().
   */
  async attachShm(bytes: number): Promise<boolean> {
    const region = createShmRegion(bytes);
    if (!region) return false;
    this.shm = { region, ring: new ShmRing(bytes) };
    try {
      await this.json(MsgType.SHM_ATTACH, this.attachBody());
      return true;
    } catch {
      // Another host, or a server that cannot map it: stay on the socket.
      this.shm = null;
      region.map.unmap();
      return false;
    }
  }

  get sharedMemory(): boolean { return this.shm !== null; }

  /**
   * A LOOKUP or PUSH whose payload (reqLen bytes, written by `fill`) and answer (at most
   * respCap bytes, read by `decode` before the room is reused) live in the shared region;
   * over the socket (`make` + `decode`) when there is no region or no room in it now.
   */
  requestShm<T>(type: number, reqLen: number, respCap: number, fill: (dst: Uint8Array) => void,
    make: (requestId: number) => Buffer, decode: (r: Reply) => T): Promise<T> {
    const shm = this.shm;
    const off = shm && !this.failure && !this.closed ? shm.ring.alloc(reqLen + respCap + 8) : -1;
    if (off < 0) return this.request(make, type).then(decode);
    const bytes = shm!.region.map.bytes;
    const respOff = off + ((reqLen + 7) & ~7);
    try {
      fill(bytes.subarray(off, off + reqLen));
    } catch (e) {
      shm!.ring.free(off);
      throw e;
    }
    // One promise per request: the pending entry decodes the answer where it lies, then
    // gives its room back (a trainer step makes one of these per field per server).
    return new Promise<T>((resolve, reject) => {
      const id = this.takeId();
      const frame = shmRequestFrame(type, id, { reqOff: off, reqLen, respOff, respCap });
      this.pending.set(id, {
        frame, type, shm: { respOff, respCap },
        resolve: (r) => {
          let v: T;
          try { v = decode(r); } catch (e) { shm!.ring.free(off); reject(e as Error); return; }
          shm!.ring.free(off);
          resolve(v);
        },
        reject: (e) => { shm!.ring.free(off); reject(e); },
      });
      this.send(frame);
    });
  }

  /**
   * Writes a request frame. Frames written in one synchronous run (a trainer issues all
   * fields' lookups, or all pushes, of a step together) leave as one buffer in one write
   * on the next tick: one syscall and one TCP segment train instead of one per frame, and
   * the server then answers them in one write too (embedding-server.ts corks per chunk).
   */
  private send(frame: Buffer): void {
    const sock = this.sock;
    if (!sock || this.opening) return; // reconnecting: open() sends every pending frame after the hello
    if (this.out.length === 0) {
      const batch = this.out;
      process.nextTick(() => {
        if (this.out === batch) this.out = [];
        // A lost socket's frames stay pending and go out again on the next connection.
        if (this.sock === sock) sock.write(batch.length === 1 ? batch[0]! : Buffer.concat(batch));
      });
    }
    this.out.push(frame);
  }

  private fail(e: Error): void {
    if (!this.failure) this.failure = e;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }

  private lost(e: Error): void {
    this.sock = null;
    // A hello in flight is not resent: it fails, and the reconnect loop tries again.
    const h = this.pending.get(this.helloId);
    if (h && h.type === MsgType.AUTH) { this.pending.delete(this.helloId); h.reject(e); }
    if (this.closed || this.failure) return;
    if (!this.re || !this.info) { this.fail(e); return; }
    if (!this.reconnecting) void this.reconnect(e);
  }

  private async reconnect(cause: Error): Promise<void> {
    this.reconnecting = true;
    const t0 = performance.now(), timeout = this.re!.timeoutMs ?? 60_000;
    let delay = this.re!.initialDelayMs ?? 50;
    const expect = { shard: this.info.shardIndex, of: this.info.numShards };
    // The hello of the lost connection is dropped from pending; everything else waits.
    for (;;) {
      if (this.closed) { this.reconnecting = false; return; }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(2 * delay, this.re!.maxDelayMs ?? 2000);
      if (this.re!.resolve) this.ep = this.re!.resolve(this.shard);
      try {
        const info = await this.open();
        if (info.shardIndex !== expect.shard || info.numShards !== expect.of) {
          throw new Error(`${this.name}: came back as shard ${info.shardIndex} of ${info.numShards}, expected ${expect.shard} of ${expect.of}`);
        }
        this.reconnecting = false;
        this.re!.onReconnect?.(this.shard, info, performance.now() - t0);
        return;
      } catch (e) {
        this.sock?.destroy();
        this.sock = null;
        if (performance.now() - t0 > timeout) {
          this.reconnecting = false;
          this.fail(new Error(`${cause.message}; no server came back within ${timeout} ms (last try: ${e instanceof Error ? e.message : String(e)})`));
          return;
        }
      }
    }
  }

  private takeId(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    return id;
  }

  private enqueue(make: (requestId: number) => Buffer, type: number, keep = true): { id: number; frame: Buffer; reply: Promise<Reply> } {
    const id = this.takeId();
    const frame = make(id);
    const reply = new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, { frame: keep ? frame : Buffer.alloc(0), type, resolve, reject });
    });
    if (!keep) reply.catch(() => undefined); // awaited by open(); a lost hello is retried there
    return { id, frame, reply };
  }

  request(make: (requestId: number) => Buffer, type: number): Promise<Reply> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error(`${this.name}: client closed`));
    const q = this.enqueue(make, type);
    // While reconnecting the frame waits in `pending`; open() sends it after the hello.
    this.send(q.frame);
    return q.reply;
  }

  async json<T>(type: number, body: unknown): Promise<T> {
    const r = await this.request((id) => encodeJsonFrame(type, id, body), type);
    return decodeJson(r.payload, `${this.name} reply`) as T;
  }

  close(): void {
    this.closed = true;
    this.sock?.destroy();
    this.fail(new Error(`${this.name}: client closed`));
  }
}

/**
 * A FRAME_SHM request frame (16 bytes of descriptor instead of the payload), the bytes of
 * protocol.ts encodeShmRequest, in a small buffer from Node's shared pool rather than an
 * ArrayBuffer of its own: these go out once per field per server per step.
 */
/**
 * Whether the connection reached the server through a forwarder (a proxy, a port forward):
 * the server's own TCP port (its hello) differs from the one the client dialled.
 */
function forwarded(info: ServerInfo, ep: EmbeddingEndpoint): boolean {
  return info.tcpPort !== undefined && info.tcpPort !== ep.port;
}

function shmRequestFrame(type: number, requestId: number, d: ShmDescriptor): Buffer {
  const f = Buffer.allocUnsafe(HEADER_BYTES + 16);
  writeHeader(f, type, requestId, 16, FRAME_SHM);
  f.writeUInt32LE(d.reqOff, HEADER_BYTES);
  f.writeUInt32LE(d.reqLen, HEADER_BYTES + 4);
  f.writeUInt32LE(d.respOff, HEADER_BYTES + 8);
  f.writeUInt32LE(d.respCap, HEADER_BYTES + 12);
  return f;
}
