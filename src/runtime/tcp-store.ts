// Key-value rendezvous store (the role of c10d's TCPStore): hosted by the launcher (or rank 0),
// used by ranks to publish addresses and to wait for each other.
//
// Wire format: every frame is `u32 bodyLength (LE) | body`; body = `u8 op | u32 reqId | args`.
// Strings and values are `u32 length | bytes`. The first frame on a connection must be AUTH
// carrying the shared token (env ATHANOR_STORE_TOKEN); until then frames are capped at
// PREAUTH_MAX_FRAME bytes. Anything malformed, oversized or unauthenticated gets an error
// frame (best effort) and the connection is closed; the server itself keeps running.
import net from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';

export const STORE_DEFAULT_MAX_FRAME = 16 << 20;
const PREAUTH_MAX_FRAME = 4096;
const AUTH_TIMEOUT_MS = 10_000;

const enum Op { AUTH = 1, SET = 2, GET = 3, ADD = 4, WAIT = 5, CHECK = 6, DELETE = 7, PING = 8 }
const enum Status { OK = 0, ERROR = 1, TIMEOUT = 2 }

function digest(token: string): Buffer { return createHash('sha256').update(token, 'utf8').digest(); }

class Writer {
  private parts: Buffer[] = [];
  u8(v: number): this { const b = Buffer.allocUnsafe(1); b[0] = v; this.parts.push(b); return this; }
  u32(v: number): this { const b = Buffer.allocUnsafe(4); b.writeUInt32LE(v >>> 0); this.parts.push(b); return this; }
  f64(v: number): this { const b = Buffer.allocUnsafe(8); b.writeDoubleLE(v); this.parts.push(b); return this; }
  bytes(v: Uint8Array): this { this.u32(v.byteLength); this.parts.push(Buffer.from(v.buffer, v.byteOffset, v.byteLength)); return this; }
  str(s: string): this { return this.bytes(Buffer.from(s, 'utf8')); }
  frame(): Buffer {
    const body = Buffer.concat(this.parts);
    const head = Buffer.allocUnsafe(4); head.writeUInt32LE(body.length);
    return Buffer.concat([head, body]);
  }
}

class Reader {
  private off = 0;
  constructor(private readonly b: Buffer) {}
  private need(n: number): void { if (this.off + n > this.b.length) throw new Error(`truncated frame (need ${n} bytes at offset ${this.off}, frame has ${this.b.length})`); }
  u8(): number { this.need(1); return this.b[this.off++]!; }
  u32(): number { this.need(4); const v = this.b.readUInt32LE(this.off); this.off += 4; return v; }
  f64(): number { this.need(8); const v = this.b.readDoubleLE(this.off); this.off += 8; return v; }
  bytes(): Buffer { const n = this.u32(); this.need(n); const v = this.b.subarray(this.off, this.off + n); this.off += n; return v; }
  str(): string { return this.bytes().toString('utf8'); }
  end(): void { if (this.off !== this.b.length) throw new Error(`${this.b.length - this.off} trailing bytes in frame`); }
}

/** Splits a byte stream into frames; enforces the size cap before buffering a body. */
class FrameSplitter {
  private buf: Buffer = Buffer.alloc(0);
  constructor(public maxFrame: number) {}
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32LE(0);
      if (len > this.maxFrame) throw new Error(`frame of ${len} bytes exceeds the limit of ${this.maxFrame}`);
      if (len < 5) throw new Error(`frame of ${len} bytes is shorter than a header`);
      if (this.buf.length < 4 + len) break;
      out.push(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}

export interface StoreServerOptions {
  host?: string;
  /** 0 = ephemeral. */
  port?: number;
  token: string;
  maxFrameBytes?: number;
  /** Called for every rejected connection (tests and logs). */
  onReject?: (reason: string) => void;
}

interface Waiter { conn: net.Socket; reqId: number; keys: string[]; op: Op; timer: NodeJS.Timeout | null }

export class TcpStoreServer {
  private server: net.Server;
  private data = new Map<string, Buffer>();
  private waiters = new Set<Waiter>();
  private conns = new Set<net.Socket>();
  private readonly tokenDigest: Buffer;
  private readonly maxFrame: number;
  rejected = 0;

  private constructor(private readonly opts: StoreServerOptions) {
    this.tokenDigest = digest(opts.token);
    this.maxFrame = opts.maxFrameBytes ?? STORE_DEFAULT_MAX_FRAME;
    this.server = net.createServer((c) => this.onConnection(c));
  }

  static async start(opts: StoreServerOptions): Promise<TcpStoreServer> {
    const s = new TcpStoreServer(opts);
    await new Promise<void>((res, rej) => {
      s.server.once('error', rej);
      s.server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => { s.server.off('error', rej); res(); });
    });
    return s;
  }

  get port(): number { return (this.server.address() as net.AddressInfo).port; }
  get host(): string { return (this.server.address() as net.AddressInfo).address; }
  /** Number of keys (tests). */
  get size(): number { return this.data.size; }

  async close(): Promise<void> {
    for (const w of this.waiters) if (w.timer) clearTimeout(w.timer);
    this.waiters.clear();
    for (const c of this.conns) c.destroy();
    await new Promise<void>((res) => this.server.close(() => res()));
  }

  private reject(conn: net.Socket, reason: string, reqId = 0): void {
    this.rejected++;
    this.opts.onReject?.(reason);
    try { conn.end(new Writer().u8(Status.ERROR).u32(reqId).str(`store: ${reason}`).frame()); } catch { /* socket gone */ }
    conn.destroy();
    this.dropWaiters(conn);
  }

  private dropWaiters(conn: net.Socket): void {
    for (const w of this.waiters) if (w.conn === conn) { if (w.timer) clearTimeout(w.timer); this.waiters.delete(w); }
  }

  private onConnection(conn: net.Socket): void {
    this.conns.add(conn);
    conn.setNoDelay(true);
    let authed = false;
    const split = new FrameSplitter(PREAUTH_MAX_FRAME);
    const authTimer = setTimeout(() => { if (!authed) this.reject(conn, 'no authentication within the time limit'); }, AUTH_TIMEOUT_MS);
    authTimer.unref();
    conn.on('error', () => { /* peer reset: handled by close */ });
    conn.on('close', () => { clearTimeout(authTimer); this.conns.delete(conn); this.dropWaiters(conn); });
    conn.on('data', (chunk: Buffer) => {
      if (conn.destroyed) return;
      let frames: Buffer[];
      try { frames = split.push(chunk); } catch (e) { this.reject(conn, (e as Error).message); return; }
      for (const f of frames) {
        if (conn.destroyed) return;
        // Frames split before AUTH completed were checked against the pre-auth cap only.
        const cap = authed ? this.maxFrame : PREAUTH_MAX_FRAME;
        if (f.length > cap) { this.reject(conn, `frame of ${f.length} bytes exceeds the limit of ${cap}`); return; }
        let reqId = 0;
        try {
          const r = new Reader(f);
          const op = r.u8();
          reqId = r.u32();
          if (!authed) {
            if (op !== Op.AUTH) { this.reject(conn, 'unauthenticated request (first frame must be AUTH)', reqId); return; }
            const tok = r.bytes(); r.end();
            const d = createHash('sha256').update(tok).digest();
            if (!timingSafeEqual(d, this.tokenDigest)) { this.reject(conn, 'bad token', reqId); return; }
            authed = true; clearTimeout(authTimer); split.maxFrame = this.maxFrame;
            conn.write(new Writer().u8(Status.OK).u32(reqId).frame());
            continue;
          }
          this.handle(conn, op, reqId, r);
        } catch (e) {
          this.reject(conn, `malformed frame: ${(e as Error).message}`, reqId);
          return;
        }
      }
    });
  }

  private reply(conn: net.Socket, reqId: number, status: Status, w?: (x: Writer) => void): void {
    const x = new Writer().u8(status).u32(reqId);
    w?.(x);
    if (!conn.destroyed) conn.write(x.frame());
  }

  private handle(conn: net.Socket, op: number, reqId: number, r: Reader): void {
    switch (op) {
      case Op.SET: {
        const k = r.str(); const v = r.bytes(); r.end();
        this.data.set(k, Buffer.from(v));
        this.reply(conn, reqId, Status.OK);
        this.wake(k);
        return;
      }
      case Op.GET: case Op.WAIT: {
        const n = op === Op.GET ? 1 : r.u32();
        if (n > 100_000) throw new Error(`wait for ${n} keys`);
        const keys: string[] = [];
        for (let i = 0; i < n; i++) keys.push(r.str());
        const timeoutMs = r.u32(); r.end();
        const w: Waiter = { conn, reqId, keys, op, timer: null };
        if (this.tryComplete(w)) return;
        if (timeoutMs > 0) {
          w.timer = setTimeout(() => {
            this.waiters.delete(w);
            const missing = keys.filter((k) => !this.data.has(k));
            this.reply(conn, reqId, Status.TIMEOUT, (x) => x.str(`timed out after ${timeoutMs} ms waiting for key(s) ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ' ...' : ''}`));
          }, timeoutMs);
        }
        this.waiters.add(w);
        return;
      }
      case Op.ADD: {
        const k = r.str(); const delta = r.f64(); r.end();
        if (!Number.isFinite(delta)) throw new Error('ADD delta is not finite');
        const old = this.data.get(k);
        const cur = old ? Number(old.toString('utf8')) : 0;
        if (!Number.isFinite(cur)) { this.reply(conn, reqId, Status.ERROR, (x) => x.str(`store: key '${k}' does not hold a number`)); return; }
        const nv = cur + delta;
        this.data.set(k, Buffer.from(String(nv), 'utf8'));
        this.reply(conn, reqId, Status.OK, (x) => x.f64(nv));
        this.wake(k);
        return;
      }
      case Op.CHECK: {
        const n = r.u32();
        if (n > 100_000) throw new Error(`check of ${n} keys`);
        let all = true;
        for (let i = 0; i < n; i++) if (!this.data.has(r.str())) all = false;
        r.end();
        this.reply(conn, reqId, Status.OK, (x) => x.u8(all ? 1 : 0));
        return;
      }
      case Op.DELETE: {
        const k = r.str(); r.end();
        const had = this.data.delete(k);
        this.reply(conn, reqId, Status.OK, (x) => x.u8(had ? 1 : 0));
        return;
      }
      case Op.PING: r.end(); this.reply(conn, reqId, Status.OK); return;
      default: throw new Error(`unknown op ${op}`);
    }
  }

  private tryComplete(w: Waiter): boolean {
    if (!w.keys.every((k) => this.data.has(k))) return false;
    if (w.timer) clearTimeout(w.timer);
    this.waiters.delete(w);
    if (w.op === Op.GET) this.reply(w.conn, w.reqId, Status.OK, (x) => x.bytes(this.data.get(w.keys[0]!)!));
    else this.reply(w.conn, w.reqId, Status.OK);
    return true;
  }

  private wake(key: string): void {
    for (const w of [...this.waiters]) if (w.keys.includes(key)) this.tryComplete(w);
  }
}

export interface StoreClientOptions {
  host: string;
  port: number;
  token: string;
  /** How long to keep retrying the initial connection (the server may start later). */
  connectTimeoutMs?: number;
  maxFrameBytes?: number;
}

/** Client side; all methods are async and may be issued concurrently. */
export class TcpStore {
  private pending = new Map<number, { resolve: (r: Reader) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private closed: Error | null = null;

  private constructor(private readonly sock: net.Socket, private readonly desc: string, maxFrame: number) {
    const split = new FrameSplitter(maxFrame);
    sock.on('data', (chunk: Buffer) => {
      let frames: Buffer[];
      try { frames = split.push(chunk); } catch (e) { this.fail(new Error(`store ${desc}: ${(e as Error).message}`)); sock.destroy(); return; }
      for (const f of frames) {
        const r = new Reader(f);
        const status = r.u8(); const id = r.u32();
        const p = this.pending.get(id);
        if (!p) {
          if (status === Status.ERROR) this.fail(new Error(`store ${desc}: ${r.str()}`));
          continue;
        }
        this.pending.delete(id);
        if (status === Status.OK) p.resolve(r);
        else p.reject(new Error(`store ${desc}: ${r.str()}`));
      }
    });
    sock.on('error', (e) => this.fail(new Error(`store ${desc}: ${e.message}`)));
    sock.on('close', () => this.fail(new Error(`store ${desc}: connection closed`)));
  }

  /** Local address of the connection: the interface that reaches the master. */
  get localAddress(): string { return this.sock.localAddress ?? '127.0.0.1'; }

  static async connect(o: StoreClientOptions): Promise<TcpStore> {
    const deadline = Date.now() + (o.connectTimeoutMs ?? 60_000);
    const desc = `${o.host}:${o.port}`;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((res, rej) => {
          const s = net.connect({ host: o.host, port: o.port });
          s.once('connect', () => { s.off('error', rej); res(s); });
          s.once('error', rej);
        });
        sock.setNoDelay(true);
        const c = new TcpStore(sock, desc, o.maxFrameBytes ?? STORE_DEFAULT_MAX_FRAME);
        await c.request(Op.AUTH, (w) => w.bytes(Buffer.from(o.token, 'utf8')));
        return c;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const retry = code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ENOENT' || code === 'EHOSTUNREACH';
        if (!retry || Date.now() > deadline) throw new Error(`store ${desc}: cannot connect: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private fail(e: Error): void {
    if (!this.closed) this.closed = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private request(op: Op, args?: (w: Writer) => void): Promise<Reader> {
    if (this.closed) return Promise.reject(this.closed);
    const id = this.nextId++;
    const w = new Writer().u8(op).u32(id);
    args?.(w);
    return new Promise<Reader>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.sock.write(w.frame());
    });
  }

  async set(key: string, value: string | Uint8Array): Promise<void> {
    await this.request(Op.SET, (w) => w.str(key).bytes(typeof value === 'string' ? Buffer.from(value, 'utf8') : value));
  }
  /** Waits until the key exists (timeoutMs 0 = forever). */
  async get(key: string, timeoutMs = 0): Promise<Buffer> {
    const r = await this.request(Op.GET, (w) => w.str(key).u32(timeoutMs));
    return Buffer.from(r.bytes());
  }
  async getString(key: string, timeoutMs = 0): Promise<string> { return (await this.get(key, timeoutMs)).toString('utf8'); }
  /** Atomic add; a missing key counts as 0. Returns the new value. */
  async add(key: string, delta: number): Promise<number> { return (await this.request(Op.ADD, (w) => w.str(key).f64(delta))).f64(); }
  async wait(keys: readonly string[], timeoutMs = 0): Promise<void> {
    await this.request(Op.WAIT, (w) => { w.u32(keys.length); for (const k of keys) w.str(k); w.u32(timeoutMs); });
  }
  async check(keys: readonly string[]): Promise<boolean> {
    const r = await this.request(Op.CHECK, (w) => { w.u32(keys.length); for (const k of keys) w.str(k); });
    return r.u8() === 1;
  }
  async delete(key: string): Promise<boolean> { return (await this.request(Op.DELETE, (w) => w.str(key))).u8() === 1; }
  async ping(): Promise<void> { await this.request(Op.PING); }
  close(): void { this.closed ??= new Error('store: closed'); this.sock.destroy(); }

  /**
   * Store-based barrier: every one of `world` callers adds 1 to `key/count`; the last one
   * publishes `key/done`, everyone waits for it.
   */
  async barrier(key: string, world: number, timeoutMs = 0): Promise<void> {
    const n = await this.add(`${key}/count`, 1);
    if (n === world) await this.set(`${key}/done`, '1');
    await this.wait([`${key}/done`], timeoutMs);
  }
}

/** Exposed for tests that hand-craft frames. */
export const storeWire = { Op: { AUTH: 1, SET: 2, GET: 3, ADD: 4, WAIT: 5, CHECK: 6, DELETE: 7, PING: 8 }, PREAUTH_MAX_FRAME };
