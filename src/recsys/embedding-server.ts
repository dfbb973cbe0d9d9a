// TCP front end of one embedding shard. Single-threaded: each frame is handled
// to completion before the next, so a lookup and a push never interleave inside
// a table. Bad input from one client (bad magic, oversized length, missing or
// wrong token, malformed payload) costs that client its request or its
// connection, never the server.
import { createServer, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { dumpShard, loadShard } from './embedding-checkpoint.js';
import type { ConfigPatch, EmbeddingShard } from './embedding-shard.js';
import {
  FrameReader, HEADER_BYTES, LOOKUP_READ_ONLY, LOOKUP_WITH_STATE, MsgType, PRE_AUTH_MAX_PAYLOAD, PROTOCOL_VERSION, ProtocolError, PUSH_ADVANCE_STEP, RESPONSE,
  decodeIdRequest, decodeJson, decodeValues, encodeErrorFrame, encodeFrame, encodeJsonFrame, allocLookupResponse, encodePushResponse,
  tokenMatches, type FrameHeader, FRAME_SHM, allocFrame, decodeShmDescriptor, layoutLookupResponse, lookupResponseBytes,
} from './protocol.js';
import { attachShmRegion, type ShmMapping } from './shm-region.js';
import { decodeHalf } from './native-sparse.js';
import type { SparseOptimizerConfig } from './sparse-optimizer.js';

export interface EmbeddingServerOptions {
  shard: EmbeddingShard;
  token: string;
  /** Loopback unless asked otherwise: the token is the only protection, and it travels in clear. */
  host?: string;
  maxFrameBytes?: number;
  /** A connection that has not authenticated by then is closed. */
  authTimeoutMs?: number;
  log?: (msg: string) => void;
  /** The checkpoint this process started from, reported in its hello (clients count lost updates with it). */
  loadedFrom?: { dumpId: string; step: number };
}

/** What the AUTH reply tells a client about this server. */
export interface ServerInfo {
  protocolVersion: number;
  shardIndex: number;
  numShards: number;
  maxFrameBytes: number;
  step: number;
  groups: Array<{ id: number; name: string; dim: number }>;
  /** Each group's sparse optimizer (by group id): a trainer replaying its in-flight gradients emulates it. */
  optimizers?: Record<string, SparseOptimizerConfig>;
  /** Set when this process started from a checkpoint: its dump id and the server step it held. */
  loadedFrom?: { dumpId: string; step: number };
  /**
   * A Unix socket (Linux abstract namespace, a name with a random part) where the same
   * server also listens: a client on this host moves there after the TCP hello, because a
   * Unix socket costs less per message than TCP loopback. Absent off Linux or if it failed.
   */
  unixSocket?: string;
  /**
   * The TCP port this server listens on. A client whose endpoint names another port reached
   * it through a forwarder (a latency-emulating proxy, a port forward) and stays on that path
   * rather than taking the Unix socket around it.
   */
  tcpPort?: number;
}

export interface ServerCounters {
  connections: number; rejectedConnections: number; requests: number; errors: number;
  /**
   * Process CPU milliseconds spent inside the store's lookup and push calls (getrusage around
   * each, a microsecond or two per request): the rest of the server's CPU is transport, event
   * loop and garbage collection (embedding-server-bench.ts reports the split).
   */
  storeCpuMs: number;
}

const cpuMs = (): number => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };

interface Conn { sock: Socket; reader: FrameReader; authed: boolean; closed: boolean; timer: NodeJS.Timeout | null; shm: ShmMapping | null }

class CloseConnection extends Error {}

export class EmbeddingServer {
  readonly shard: EmbeddingShard;
  readonly counters: ServerCounters = { connections: 0, rejectedConnections: 0, requests: 0, errors: 0, storeCpuMs: 0 };
  private readonly token: string;
  private readonly host: string;
  private readonly maxFrameBytes: number;
  private readonly authTimeoutMs: number;
  private readonly log: (msg: string) => void;
  private readonly server: Server;
  /** The same handler on a Unix socket for clients on this host (see ServerInfo.unixSocket). */
  private readonly unixServer: Server;
  private unixName: string | null = null;
  private readonly conns = new Set<Conn>();
  private grads = new Float32Array(0);

  private readonly loadedFrom: { dumpId: string; step: number } | null;

  constructor(o: EmbeddingServerOptions) {
    if (!o.token) throw new Error('embedding server: an empty token is not allowed');
    this.shard = o.shard;
    this.token = o.token;
    this.host = o.host ?? '127.0.0.1';
    this.maxFrameBytes = o.maxFrameBytes ?? o.shard.config.maxFrameBytes;
    this.authTimeoutMs = o.authTimeoutMs ?? 10_000;
    this.log = o.log ?? (() => undefined);
    this.loadedFrom = o.loadedFrom ?? null;
    this.server = createServer((s) => this.onConnection(s));
    this.unixServer = createServer((s) => this.onConnection(s));
  }

  async listen(port: number): Promise<number> {
    const p = await new Promise<number>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, this.host, () => {
        this.server.off('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a ? a.port : port);
      });
    });
    this.tcpPort = p;
    // Abstract names need no file and vanish with the process; the random part keeps another
    // process from squatting a name a client would send its token to (clients learn it from
    // the hello of the TCP connection they were pointed at).
    if (process.platform === 'linux') {
      const name = `\0athanor-emb-${process.pid}-${p}-${randomBytes(8).toString('hex')}`;
      await new Promise<void>((resolve) => {
        const fail = (e: Error): void => { this.log(`no Unix socket for local clients (${e.message}); TCP only`); resolve(); };
        this.unixServer.once('error', fail);
        this.unixServer.listen(name, () => { this.unixServer.off('error', fail); this.unixName = name; resolve(); });
      });
    }
    return p;
  }

  close(): Promise<void> {
    for (const c of this.conns) c.sock.destroy();
    const closing = this.unixName ? new Promise<void>((resolve) => this.unixServer.close(() => resolve())) : Promise.resolve();
    return Promise.all([closing, new Promise<void>((resolve) => this.server.close(() => resolve()))]).then(() => undefined);
  }

  info(): ServerInfo {
    const s = this.shard;
    return {
      protocolVersion: PROTOCOL_VERSION, shardIndex: s.shardIndex, numShards: s.numShards, maxFrameBytes: this.maxFrameBytes, step: s.step,
      groups: s.tables.filter((t) => !!t).map((t) => ({ id: t!.cfg.id, name: t!.cfg.name, dim: t!.dim })),
      ...(this.loadedFrom ? { loadedFrom: this.loadedFrom } : {}),
      ...(this.unixName ? { unixSocket: this.unixName, tcpPort: this.tcpPort } : {}),
      optimizers: Object.fromEntries(s.tables.filter((t) => !!t).map((t) => [String(t!.cfg.id), t!.cfg.optimizer])),
    };
  }

  /** The bound TCP port (ServerInfo.tcpPort). */
  private tcpPort = 0;

  private onConnection(sock: Socket): void {
    sock.setNoDelay(true);
    // Frames are handled to completion inside 'data' (nothing keeps a payload), so one payload buffer per connection serves all.
    const c: Conn = { sock, reader: new FrameReader(PRE_AUTH_MAX_PAYLOAD, true), authed: false, closed: false, timer: null, shm: null };
    this.conns.add(c);
    this.counters.connections++;
    c.timer = setTimeout(() => this.reject(c, 0, 'authentication timeout'), this.authTimeoutMs);
    sock.on('data', (chunk: Buffer) => {
      if (c.closed) return;
      // The answers to every frame of this chunk leave in one write (clients send a step's requests together).
      sock.cork();
      try {
        c.reader.push(chunk, (h, p) => this.onFrame(c, h, p));
      } catch (e) {
        if (e instanceof CloseConnection) return;
        // A broken header means the stream cannot be resynchronised: answer and hang up.
        this.reject(c, 0, e instanceof Error ? e.message : String(e));
      } finally {
        sock.uncork();
      }
    });
    sock.on('drain', () => sock.resume());
    sock.on('error', () => undefined); // resets from misbehaving peers are expected
    sock.on('close', () => {
      c.closed = true;
      if (c.timer) clearTimeout(c.timer);
      this.conns.delete(c);
      // Frames are handled synchronously, so no view of the region outlives this.
      c.shm?.unmap();
      c.shm = null;
    });
  }

  private reject(c: Conn, requestId: number, why: string): void {
    if (c.closed) return;
    c.closed = true;
    if (c.timer) clearTimeout(c.timer);
    this.counters.rejectedConnections++;
    this.log(`closing connection from ${c.sock.remoteAddress ? `${c.sock.remoteAddress}:${c.sock.remotePort}` : 'a local Unix socket'}: ${why}`);
    c.sock.end(encodeErrorFrame(requestId, why));
    setTimeout(() => c.sock.destroy(), 1000).unref();
  }

  private send(c: Conn, frame: Buffer): void {
    if (c.closed || c.sock.destroyed) return;
    // Stop reading from a client that does not read its answers.
    if (!c.sock.write(frame)) c.sock.pause();
  }

  private onFrame(c: Conn, h: FrameHeader, payload: Uint8Array): void {
    if (c.closed) throw new CloseConnection();
    if (!c.authed) {
      if (h.type !== MsgType.AUTH || !tokenMatches(payload, this.token)) {
        this.reject(c, h.requestId, h.type === MsgType.AUTH ? 'authentication failed' : 'authentication required');
        throw new CloseConnection();
      }
      c.authed = true;
      if (c.timer) { clearTimeout(c.timer); c.timer = null; }
      c.reader.maxPayload = this.maxFrameBytes - HEADER_BYTES;
      this.send(c, encodeJsonFrame(MsgType.AUTH | RESPONSE, h.requestId, this.info()));
      return;
    }
    this.counters.requests++;
    try {
      this.dispatch(c, h, payload);
    } catch (e) {
      this.counters.errors++;
      this.send(c, encodeErrorFrame(h.requestId, e instanceof Error ? e.message : String(e)));
    }
  }

  private region(c: Conn): Uint8Array {
    if (!c.shm) throw new ProtocolError('shared-memory frame on a connection without an attached region (send SHM_ATTACH first)');
    return c.shm.bytes;
  }

  private dispatch(c: Conn, h: FrameHeader, payload: Uint8Array): void {
    const shard = this.shard;
    switch (h.type) {
      case MsgType.LOOKUP: {
        // With FRAME_SHM the request is read, and the answer written, in place in the client's region.
        const d = (h.flags & FRAME_SHM) !== 0 ? decodeShmDescriptor(payload, this.region(c).byteLength) : null;
        const req = d ? c.shm!.bytes.subarray(d.reqOff, d.reqOff + d.reqLen) : payload;
        const r = decodeIdRequest(req, () => 0, false);
        const t = shard.table(r.group);
        const withState = (r.flags & LOOKUP_WITH_STATE) !== 0;
        let m = 0;
        if (withState) for (let i = 0; i < r.count; i++) if (r.values[i] !== 0) m++;
        const sw = withState ? t.stW : 0;
        let out: { values: Uint8Array; state: Float32Array | null }, frame: Buffer;
        if (d) {
          const len = lookupResponseBytes(r.dtype, r.count, t.dim, sw, m);
          if (len > d.respCap) throw new ProtocolError(`lookup: the answer needs ${len} bytes of shared memory, the client left ${d.respCap}`);
          out = layoutLookupResponse(c.shm!.bytes.subarray(d.respOff, d.respOff + len), r.group, r.dtype, r.count, t.dim, sw, m);
          frame = allocFrame(MsgType.LOOKUP | RESPONSE, h.requestId, 8, FRAME_SHM);
          frame.writeUInt32LE(len, HEADER_BYTES);
          frame.writeUInt32LE(0, HEADER_BYTES + 4);
        } else {
          const a = allocLookupResponse(h.requestId, r.group, r.dtype, r.count, t.dim, sw, m);
          out = a; frame = a.frame;
        }
        const c0 = cpuMs();
        t.lookupWire(r.ids, r.count, r.dtype, out.values, shard.step, (r.flags & LOOKUP_READ_ONLY) !== 0);
        if (out.state) t.gatherState(r.ids, r.count, r.values, out.state);
        this.counters.storeCpuMs += cpuMs() - c0;
        this.send(c, frame);
        return;
      }
      case MsgType.PUSH: {
        const d = (h.flags & FRAME_SHM) !== 0 ? decodeShmDescriptor(payload, this.region(c).byteLength) : null;
        const r = decodeIdRequest(d ? c.shm!.bytes.subarray(d.reqOff, d.reqOff + d.reqLen) : payload, (g) => shard.table(g).dim, true);
        const dim = shard.table(r.group).dim;
        const need = r.count * dim;
        if (r.dtype === 'bfloat16') {
          // The store reads bfloat16 gradients in place (payload arrays are 8-aligned).
          const c0 = cpuMs();
          const res = shard.pushBf16(r.group, r.ids, r.count, new Uint16Array(r.values.buffer, r.values.byteOffset, need), (r.flags & PUSH_ADVANCE_STEP) !== 0);
          this.counters.storeCpuMs += cpuMs() - c0;
          this.send(c, encodePushResponse(h.requestId, res));
          return;
        }
        const c0 = cpuMs();
        if (this.grads.length < need) this.grads = new Float32Array(need);
        // float16 gradients decode in bulk natively (payload arrays are 8-aligned); float32 or no library: TS.
        if (r.dtype === 'float32' || !decodeHalf(false, need, new Uint16Array(r.values.buffer, r.values.byteOffset, need), this.grads)) {
          decodeValues(r.dtype, r.values, need, this.grads);
        }
        const res = shard.push(r.group, r.ids, r.count, this.grads, (r.flags & PUSH_ADVANCE_STEP) !== 0);
        this.counters.storeCpuMs += cpuMs() - c0;
        this.send(c, encodePushResponse(h.requestId, res));
        return;
      }
      case MsgType.SHM_ATTACH: {
        const o = decodeJson(payload, 'shm-attach') as { pid?: unknown; fd?: unknown; bytes?: unknown; nonce?: unknown };
        const map = attachShmRegion(o);
        c.shm?.unmap();
        c.shm = map;
        this.send(c, encodeJsonFrame(MsgType.SHM_ATTACH | RESPONSE, h.requestId, { ok: true, bytes: map.bytes.byteLength }));
        return;
      }
      case MsgType.STATS:
        this.send(c, encodeJsonFrame(MsgType.STATS | RESPONSE, h.requestId, { ...shard.stats(), server: { ...this.counters } }));
        return;
      case MsgType.PING:
        this.send(c, encodeFrame(MsgType.PING | RESPONSE, h.requestId));
        return;
      case MsgType.SET_CONFIG: {
        shard.setConfig(decodeJson(payload, 'set-config') as ConfigPatch);
        this.send(c, encodeJsonFrame(MsgType.SET_CONFIG | RESPONSE, h.requestId, { ok: true }));
        return;
      }
      case MsgType.LOAD: {
        const o = decodeJson(payload, 'load') as { dir?: unknown; dumpId?: unknown };
        if (typeof o.dir !== 'string') throw new ProtocolError(`load: field 'dir' must be a string`);
        const res = loadShard(shard, o.dir, typeof o.dumpId === 'string' ? o.dumpId : undefined);
        this.log(`loaded ${res.rowsLoaded} rows from ${o.dir} (${res.fromNumShards} shards, dump ${res.dumpId})`);
        this.send(c, encodeJsonFrame(MsgType.LOAD | RESPONSE, h.requestId, res));
        return;
      }
      case MsgType.DUMP: {
        const o = decodeJson(payload, 'dump') as { dir?: unknown; dumpId?: unknown };
        if (typeof o.dir !== 'string' || typeof o.dumpId !== 'string') throw new ProtocolError(`dump: fields 'dir' and 'dumpId' must be strings`);
        // The snapshot is taken now (synchronously); the writing overlaps later requests.
        dumpShard(shard, o.dir, o.dumpId).then(
          (m) => this.send(c, encodeJsonFrame(MsgType.DUMP | RESPONSE, h.requestId, m)),
          (e: unknown) => { this.counters.errors++; this.send(c, encodeErrorFrame(h.requestId, `dump: ${e instanceof Error ? e.message : String(e)}`)); },
        );
        return;
      }
      default:
        throw new ProtocolError(`unknown message type ${h.type}`);
    }
  }
}
