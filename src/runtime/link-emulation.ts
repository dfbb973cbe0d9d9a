// Emulated network between ranks, for benchmarks and tests only (this kernel has no
// netem qdisc; bench/net-emulator.ts does the same for trainer <-> embedding-server
// traffic as a proxy). Set ATHANOR_EMULATE_LINK="rtt=5,jitter=1,bw=25e6" (milliseconds,
// milliseconds, bytes per second) or InitOptions.emulate, and every message a socket
// rank sends (collectives, point-to-point, control) waits as it would on such a link.
// MPI traffic is not emulated.
//
// Model (as the proxy's), per sending rank:
// - one transmitter shared by all its peers (the rank's NIC): a message starts when the
//   transmitter is free and holds it for bytes / bandwidth seconds;
// - then it propagates for rtt/2 plus a jitter drawn uniformly in [0, jitter] ms;
// - messages to one peer leave in the order they were sent (the socket is a stream).
// The wait happens before the bytes are handed to the socket, so the receiver sees them
// late by exactly that much; timers have ~1 ms granularity.

export interface LinkSpec {
  /** Added round-trip time in milliseconds (each direction gets half). */
  rttMs: number;
  /** Extra delay per message, uniform in [0, jitterMs] ms (default 0). */
  jitterMs?: number;
  /** Bytes per second leaving each rank; 0 or absent = unlimited. */
  bandwidthBytesPerSec?: number;
  /** Seed of the jitter stream (default 1; the rank is mixed in). */
  seed?: number;
}

export const EMULATE_ENV = 'ATHANOR_EMULATE_LINK';

/** Parses "rtt=5,jitter=1,bw=25e6"; throws naming the variable and the bad field. */
export function parseLinkSpec(text: string, where = EMULATE_ENV): LinkSpec {
  const spec: LinkSpec = { rttMs: 0 };
  let sawRtt = false;
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(rtt|jitter|bw|seed)=(.+)$/.exec(part);
    const v = m ? Number(m[2]) : NaN;
    if (!m || !Number.isFinite(v) || v < 0) throw new Error(`${where}: '${part}' is not one of rtt=<ms>, jitter=<ms>, bw=<bytes/s>, seed=<n> with a non-negative number`);
    if (m[1] === 'rtt') { spec.rttMs = v; sawRtt = true; } else if (m[1] === 'jitter') spec.jitterMs = v;
    else if (m[1] === 'bw') spec.bandwidthBytesPerSec = v;
    else spec.seed = v;
  }
  if (!sawRtt) throw new Error(`${where}: 'rtt=<ms>' is required (got '${text}')`);
  return spec;
}

interface Queued { due: number; run: () => void }

/** One rank's side of the emulated links: call `after` for every message, in send order per peer. */
export class LinkEmulator {
  private txFree = 0;
  private readonly last = new Map<number, number>();
  private readonly queues = new Map<number, { q: Queued[]; timer: NodeJS.Timeout | null }>();
  private s: number;

  constructor(readonly spec: LinkSpec, rank: number) {
    this.s = ((spec.seed ?? 1) * 2654435761 + rank * 40503 + 1) >>> 0 || 1;
  }

  private jitter(): number {
    const j = this.spec.jitterMs ?? 0;
    if (j === 0) return 0;
    let s = this.s;
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; // xorshift32
    this.s = s;
    return (s / 4294967296) * j;
  }

  /** Runs `send` once a message of `bytes` to `peer` would have arrived; resolves with its result. */
  after<T>(peer: number, bytes: number, send: () => Promise<T>): Promise<T> {
    const now = performance.now();
    let t = now;
    const bw = this.spec.bandwidthBytesPerSec ?? 0;
    if (bw > 0) {
      const start = Math.max(now, this.txFree);
      this.txFree = start + (bytes * 1000) / bw;
      t = this.txFree;
    }
    const due = Math.max(this.last.get(peer) ?? 0, t + this.spec.rttMs / 2 + this.jitter());
    this.last.set(peer, due);
    return new Promise<T>((resolve, reject) => {
      let pq = this.queues.get(peer);
      if (!pq) { pq = { q: [], timer: null }; this.queues.set(peer, pq); }
      pq.q.push({ due, run: () => { send().then(resolve, reject); } });
      this.pump(pq);
    });
  }

  private pump(pq: { q: Queued[]; timer: NodeJS.Timeout | null }): void {
    if (pq.timer) return;
    const now = performance.now();
    while (pq.q.length > 0 && pq.q[0]!.due <= now + 0.05) pq.q.shift()!.run();
    if (pq.q.length === 0) return;
    pq.timer = setTimeout(() => { pq.timer = null; this.pump(pq); }, Math.max(1, Math.ceil(pq.q[0]!.due - now)));
  }
}
