// User-space network emulation for benchmarks and tests (this kernel has no netem qdisc):
// a loopback TCP proxy in front of one server that delays, jitters and rate-limits the
// bytes in each direction. Not a product feature: it exists so that the latency-hiding
// claims of the hybrid trainer can be measured on one machine.
//
// Model, per direction:
// - a link of `bandwidthBytesPerSec` shared by every connection through this proxy (the
//   server's NIC): a chunk starts transmitting when the link is free and occupies it for
//   bytes / bandwidth seconds;
// - then it propagates for the one-way delay plus a jitter drawn uniformly in
//   [0, jitterMs]; delivery times never go backwards on one connection (TCP keeps order).
// The round trip is split between the two directions. Node timers have ~1 ms granularity,
// so a one-way delay below 1 ms is put on the answer direction only (a 1 ms RTT is then
// 1 ms one way and 0 the other, not 0.5 + 0.5 rounded up to 2 ms).
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from 'node:net';

export interface LinkSpec {
  /** Added round-trip time in milliseconds (split over the two directions). */
  rttMs: number;
  /** Extra delay per chunk, uniform in [0, jitterMs] ms (default 0). */
  jitterMs?: number;
  /** Bytes per second in each direction, shared by all connections; 0 or absent = unlimited. */
  bandwidthBytesPerSec?: number;
  /** Seed of the jitter stream (default 1). */
  seed?: number;
}

export interface ProxyCounters { connections: number; bytesUp: number; bytesDown: number }

/** One direction of the link: the shared transmitter of a proxy. */
class Link {
  free = 0; // time (ms) the transmitter is next idle
  constructor(readonly delayMs: number, readonly bw: number) {}
}

/** One direction of one connection: chunks waiting for their delivery time, in order. */
class Pipe {
  private q: Array<{ buf: Buffer; due: number }> = [];
  private last = 0;
  private timer: NodeJS.Timeout | null = null;
  constructor(private readonly link: Link, private readonly jitter: () => number, private readonly out: Socket) {}

  push(buf: Buffer): void {
    const now = performance.now();
    let t = now;
    if (this.link.bw > 0) {
      const start = Math.max(now, this.link.free);
      this.link.free = start + (buf.length * 1000) / this.link.bw;
      t = this.link.free;
    }
    const due = Math.max(this.last, t + this.link.delayMs + this.jitter());
    this.last = due;
    this.q.push({ buf, due });
    this.pump();
  }

  private pump(): void {
    if (this.timer) return;
    const now = performance.now();
    while (this.q.length > 0 && this.q[0]!.due <= now + 0.05) this.out.write(this.q.shift()!.buf);
    if (this.q.length === 0) return;
    this.timer = setTimeout(() => { this.timer = null; this.pump(); }, Math.max(1, Math.ceil(this.q[0]!.due - now)));
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.q = [];
  }
}

export class NetEmulatorProxy {
  readonly counters: ProxyCounters = { connections: 0, bytesUp: 0, bytesDown: 0 };
  private readonly socks = new Set<Socket>();
  private constructor(private readonly server: Server, readonly host: string, readonly port: number) {}

  /** Starts a proxy on 127.0.0.1 (any free port) forwarding to `target`. */
  static start(target: { host?: string; port: number }, spec: LinkSpec): Promise<NetEmulatorProxy> {
    if (!(spec.rttMs >= 0)) throw new Error(`net emulator: rttMs must be >= 0 (got ${spec.rttMs})`);
    if (spec.jitterMs !== undefined && !(spec.jitterMs >= 0)) throw new Error(`net emulator: jitterMs must be >= 0 (got ${spec.jitterMs})`);
    if (spec.bandwidthBytesPerSec !== undefined && !(spec.bandwidthBytesPerSec >= 0)) throw new Error(`net emulator: bandwidthBytesPerSec must be >= 0 (got ${spec.bandwidthBytesPerSec})`);
    const half = spec.rttMs / 2;
    const [upDelay, downDelay] = half >= 1 ? [half, spec.rttMs - half] : [0, spec.rttMs];
    const bw = spec.bandwidthBytesPerSec ?? 0;
    const up = new Link(upDelay, bw), down = new Link(downDelay, bw);
    const jit = spec.jitterMs ?? 0;
    let s = (spec.seed ?? 1) >>> 0 || 1;
    const jitter = (): number => {
      if (jit === 0) return 0;
      s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; // xorshift32
      return (s / 4294967296) * jit;
    };
    let proxy: NetEmulatorProxy;
    const server = createServer((client) => {
      proxy.counters.connections++;
      client.setNoDelay(true);
      const upstream = netConnect({ host: target.host ?? '127.0.0.1', port: target.port });
      upstream.setNoDelay(true);
      proxy.socks.add(client); proxy.socks.add(upstream);
      const toServer = new Pipe(up, jitter, upstream), toClient = new Pipe(down, jitter, client);
      client.on('data', (b: Buffer) => { proxy.counters.bytesUp += b.length; toServer.push(b); });
      upstream.on('data', (b: Buffer) => { proxy.counters.bytesDown += b.length; toClient.push(b); });
      // A close on either side closes the other at once (a dead server must look dead to the client).
      const end = (): void => {
        toServer.close(); toClient.close();
        client.destroy(); upstream.destroy();
        proxy.socks.delete(client); proxy.socks.delete(upstream);
      };
      client.on('close', end); upstream.on('close', end);
      client.on('error', end); upstream.on('error', end);
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        proxy = new NetEmulatorProxy(server, '127.0.0.1', (server.address() as AddressInfo).port);
        resolve(proxy);
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.socks) s.destroy();
    this.socks.clear();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** One proxy per endpoint, all with the same link; returns the proxies' endpoints in order. */
export async function emulateLinks(targets: Array<{ host?: string; port: number }>, spec: LinkSpec): Promise<{ proxies: NetEmulatorProxy[]; endpoints: Array<{ host: string; port: number }>; close(): Promise<void> }> {
  const proxies = await Promise.all(targets.map((t, i) => NetEmulatorProxy.start(t, { ...spec, seed: (spec.seed ?? 1) + i })));
  return {
    proxies,
    endpoints: proxies.map((p) => ({ host: p.host, port: p.port })),
    close: async () => { await Promise.all(proxies.map((p) => p.close())); },
  };
}
