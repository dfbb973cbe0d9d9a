// Embedding parameter server throughput: one server process, one client process
// (this one), batches of Zipf-distributed ids; each iteration is a lookup and a
// gradient push of the same batch (the trainer's pattern). Reported per server
// core (ids / server CPU-second, from the server's own cpuUsage), next to this
// machine's single-core memcpy bandwidth measured in the same run.
// Sets of client threads (embedding-server-bench-client.ts, 2 by default: one client
// cannot keep a server busy) take turns on the same server (reps interleaved, medians
// reported): over the socket only, and through shared memory (shm-region.ts: payloads
// and answers in a region both processes map; 16-byte descriptors on the socket); each
// both as trainers (the EmbeddingClient API, with a trainer's client-side work per
// iteration) and as replaying load generators (the same requests pre-encoded: the server
// is saturated, so its rate is its capacity rather than the cost of waking up for each
// request of clients that share its 2 cores). The server's own store calls, run in this
// process without a transport on the same batches, are the last peer.
// Every client set first runs for a warm-up period (JIT tier-up on both sides).
// Clients connect as EmbeddingClient does on one host (shm clients move to the server's Unix socket, socket clients
// stay on TCP loopback); --other-connection adds twins of every client set connected the other way (name@other),
// interleaved in the same reps.
// Run: node dist/bench/embedding-server-bench.js [secondsPerRep] [--quick] [--batch N] (ids per request, default 4096) [--other-connection]
import { cpus, loadavg } from 'node:os';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
import { parseServerConfig } from '../src/recsys/embedding-config.js';
import { GroupTable } from '../src/recsys/embedding-store.js';
import { idsToPairs } from '../src/recsys/embedding-hash.js';
import { decodeHalf } from '../src/recsys/native-sparse.js';
import { decodeValues } from '../src/recsys/protocol.js';
import { DEFAULT_SHARED_MEMORY_BYTES } from '../src/recsys/embedding-client.js';
import { Worker, isMainThread } from 'node:worker_threads';
import type { BenchClientData } from './embedding-server-bench-client.js';
import type { WireDType } from '../src/recsys/protocol.js';
import { wireBytes } from '../src/recsys/protocol.js';

export interface EmbeddingBenchOptions {
  dims?: number[];
  batch?: number;
  universe?: number;
  zipfS?: number;
  secondsPerDim?: number;
  wireDtype?: WireDType;
  /** Iterations (lookup + push) kept in flight. */
  inFlight?: number;
  /** Client threads driving the server at once (each keeps inFlight iterations in flight). */
  clients?: number;
  /** Interleaved repetitions per dim and transport (medians reported). */
  reps?: number;
  transports?: Transport[];
  /** Seconds each client set runs before anything is timed (default 2). */
  warmSeconds?: number;
}

/** 'socket' / 'shm': trainer clients; '-replay': load generators sending the same requests pre-encoded. */
export type Transport = ClientSet | 'in-process';
const BASE_SETS = ['socket', 'shm', 'socket-replay', 'shm-replay'] as const;
/**
 * Clients connect as EmbeddingClient does by default on one host: shared-memory clients move
 * to the server's Unix socket after the TCP hello, sockets-only clients stay on TCP loopback.
 * '@other' twins take the other connection (socket@other: Unix; shm@other: TCP).
 */
type ClientSet = typeof BASE_SETS[number] | `${typeof BASE_SETS[number]}@other`;
const CLIENT_SETS: ClientSet[] = [...BASE_SETS, ...BASE_SETS.map((b) => `${b}@other` as const)];
const onUnix = (set: ClientSet): boolean => set.startsWith('shm') !== set.endsWith('@other');

export interface EmbeddingBenchDim {
  dim: number;
  /**
   * 'socket': payloads through the TCP connection; 'shm': through shared memory;
   * 'in-process': the same store calls a server makes per request (bf16 lookup answer,
   * bf16 gradient push) in this process, no transport: the ceiling for the other two.
   */
  transport: Transport;
  iterations: number;
  idsPerBatch: number;
  uniquePerBatch: number;
  wallSeconds: number;
  serverCpuSeconds: number;
  /** Requested ids looked up and updated per wall second. */
  idsPerSec: number;
  /** Distinct rows looked up and updated per server CPU-second (what one server core sustains). */
  rowsPerServerCoreSec: number;
  /** Requested ids per server CPU-second (dedup on the client makes this larger than rowsPerServerCoreSec). */
  idsPerServerCoreSec: number;
  /** Essential bytes touched on the server per row looked up and updated (rows, optimizer state, wire payloads). */
  bytesPerRow: number;
  /** rowsPerServerCoreSec x bytesPerRow / memcpy bandwidth. */
  fractionOfBound: number;
  /** Share of the server's CPU time spent in the kernel (system time). */
  systemShare: number;
  /** Server context switches per iteration: voluntary (it slept waiting for a request) and involuntary (preempted). */
  sleepsPerIteration: number;
  preemptionsPerIteration: number;
  /** Server CPU-seconds per wall second while the peer ran (1 = one core busy all the time). */
  serverUtilisation: number;
  /** Server CPU milliseconds per iteration (lookup + push of one batch), and the part inside the store's calls (the in-process peer: all of it). */
  serverMsPerIteration: number;
  storeMsPerIteration: number;
}

export interface EmbeddingBenchResult {
  memcpyGBps: number;
  loadavg: { before: number[]; after: number[] };
  wireDtype: WireDType;
  optimizer: string;
  dims: EmbeddingBenchDim[];
}

/**
 * Single-core copy bandwidth over buffers far larger than the caches; counts bytes read +
 * written per CPU-second (not wall second): the server rates are per server CPU-second, and
 * on a loaded machine wall time would shrink the bound by the share of the core we lost.
 */
export function measureMemcpyGBps(bytes = 128 << 20, reps = 8): number {
  const a = new Float32Array(bytes / 4).fill(1), b = new Float32Array(bytes / 4);
  b.set(a); // fault the pages in
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const c = process.cpuUsage();
    b.set(a);
    const d = process.cpuUsage(c);
    const s = (d.user + d.system) / 1e6;
    if (s > 0) best = Math.min(best, s);
  }
  return (2 * bytes) / best / 1e9;
}

/** Zipf(s) ranks 0..n-1 by inverse-CDF lookup (deterministic LCG). */
export function zipfBatches(n: number, s: number, batch: number, count: number, seed = 12345): BigUint64Array[] {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let k = 0; k < n; k++) { acc += 1 / Math.pow(k + 1, s); cdf[k] = acc; }
  let x = seed;
  const out: BigUint64Array[] = [];
  for (let b = 0; b < count; b++) {
    const ids = new BigUint64Array(batch);
    const w = new Uint32Array(ids.buffer);
    for (let i = 0; i < batch; i++) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      const u = (x / 4294967296) * acc;
      let lo = 0, hi = n - 1;
      while (lo < hi) { const m = (lo + hi) >> 1; if (cdf[m]! < u) lo = m + 1; else hi = m; }
      w[2 * i] = lo; // the server hashes ids, so raw ranks are fine
    }
    out.push(ids);
  }
  return out;
}

const median = (a: number[]): number => [...a].sort((x, y) => x - y)[a.length >> 1]!;

export async function runEmbeddingServerBench(o: EmbeddingBenchOptions = {}): Promise<EmbeddingBenchResult> {
  const dims = o.dims ?? [16, 64, 128];
  const batch = o.batch ?? 4096, universe = o.universe ?? 1 << 20, zipfS = o.zipfS ?? 1.05;
  const seconds = o.secondsPerDim ?? 2, wire = o.wireDtype ?? 'bfloat16', inFlight = o.inFlight ?? 2, reps = o.reps ?? 3;
  const transports = o.transports ?? ['in-process', 'socket', 'shm', 'socket-replay', 'shm-replay'];
  const warmSeconds = o.warmSeconds ?? 2;
  const before = loadavg();
  const memcpy: number[] = [measureMemcpyGBps()];
  const optimizer = { kind: 'adagrad' as const, lr: 0.01, eps: 1e-10, initialAccumulator: 0 };
  const cluster = await launchEmbeddingServers({
    numShards: 1,
    config: { seed: 1, maxFrameBytes: 64 << 20, capacity: universe, optimizer, groups: dims.map((d, i) => ({ id: i + 1, dim: d })) },
  });
  // Client threads per transport (a single client cannot keep the server busy); `stats` reads the server's CPU time.
  const nClients = o.clients ?? 2;
  const stats = await cluster.connect({ wireDtype: wire, sharedMemoryBytes: 0 });
  const seedOf = (i: number): number => 12345 + 7919 * i;
  const spawnClients = (set: ClientSet): Promise<Worker[]> => Promise.all(Array.from({ length: nClients }, (_, i) => new Promise<Worker>((resolve, reject) => {
    const data: BenchClientData = {
      servers: cluster.endpoints(), token: cluster.token, wire, sharedMemoryBytes: set.startsWith('shm') ? DEFAULT_SHARED_MEMORY_BYTES : 0,
      universe, zipfS, batch, seed: seedOf(i), kind: set.includes('replay') ? 'replay' : 'trainer', unixSocket: onUnix(set),
    };
    const w = new Worker(new URL('./embedding-server-bench-client.js', import.meta.url), { workerData: data });
    w.once('message', () => resolve(w));
    w.once('error', reject);
  })));
  const ask = (ws: Worker[], m: unknown): Promise<Array<{ it: number; wall: number; sharedMemory?: boolean; unixSocket?: boolean }>> => Promise.all(ws.map((w) => new Promise<{ it: number; wall: number }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
    w.postMessage(m);
  })));
  const clients = new Map<ClientSet, Worker[]>();
  for (const set of CLIENT_SETS) if (transports.includes(set)) clients.set(set, await spawnClients(set));
  const serverCfg = parseServerConfig({ seed: 1, capacity: universe, optimizer, groups: dims.map((d, i) => ({ id: i + 1, dim: d })) }, 'bench');
  // The in-process peer replays the batches of every client thread, as the server sees them.
  const batches = Array.from({ length: nClients }, (_, i) => zipfBatches(universe, zipfS, batch, 64, seedOf(i))).flat();
  const uniquePerBatch = batches.reduce((a, b) => a + new Set(b).size, 0) / batches.length;
  const results: EmbeddingBenchDim[] = [];
  try {
    for (let gi = 0; gi < dims.length; gi++) {
      const group = gi + 1, dim = dims[gi]!;
      const samples = new Map<string, Array<{ it: number; wall: number; cpu: number; sys: number; vcs: number; ics: number; store: number }>>();
      // In-process peer: one table, the distinct ids of each batch as the client sends them.
      const table = new GroupTable(serverCfg.groups[gi]!, 1);
      // Interleaved as the client threads take turns (thread i's batch k at k * nClients + i).
      const local = Array.from({ length: batches.length }, (_, j) => idsToPairs(group, [...new Set(batches[(j % nClients) * 64 + Math.floor(j / nClients)]!)]));
      const wireOut = new Uint8Array(batch * dim * 2), wireGrad = new Uint16Array(batch * dim).fill(0x3a83), grads = new Float32Array(batch * dim);
      let step = 0;
      const inProcess = (k: number): void => {
        const ids = local[k % local.length]!, n = ids.length / 2;
        table.lookupWire(ids, n, wire === 'float32' ? 'bfloat16' : wire, wireOut, step, false);
        // As the server's PUSH: bfloat16 gradients go to the store undecoded, float16 is decoded first.
        if (wire !== 'float16') { table.pushBf16(ids, n, wireGrad, step++); return; }
        if (!decodeHalf(false, n * dim, wireGrad, grads)) decodeValues('float16', new Uint8Array(wireGrad.buffer), n * dim, grads);
        table.push(ids, n, grads, step++);
      };
      for (const tr of transports) {
        samples.set(tr, []);
        if (tr === 'in-process') {
          const t0 = performance.now();
          for (let k = 0; k < local.length || performance.now() - t0 < warmSeconds * 1000; k++) inProcess(k);
          continue;
        }
        const warm = await ask(clients.get(tr)!, { cmd: 'warm', group, seconds: warmSeconds });
        if (tr.startsWith('shm') && warm.some((x) => !x.sharedMemory)) throw new Error('embedding-server-bench: a shared-memory client fell back to the socket');
        if (warm.some((x) => x.unixSocket !== onUnix(tr))) throw new Error(`embedding-server-bench: a ${tr} client is ${onUnix(tr) ? 'not ' : ''}on the server's Unix socket`);
      }
      for (let rep = 0; rep < reps; rep++) {
        for (const tr of transports) {
          if (tr === 'in-process') {
            const c0 = process.cpuUsage(), t0 = performance.now();
            let it = 0;
            while (performance.now() - t0 < seconds * 1000) inProcess(it++);
            const c = process.cpuUsage(c0);
            samples.get(tr)!.push({ it, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6, sys: c.system / 1e6, vcs: 0, ics: 0, store: (c.user + c.system) / 1e6 });
            continue;
          }
          const cpu0 = (await stats.stats()).shards[0]!;
          const t0 = performance.now();
          const done = await ask(clients.get(tr)!, { cmd: 'run', group, seconds, inFlight });
          const wall = (performance.now() - t0) / 1000;
          const cpu1 = (await stats.stats()).shards[0]!;
          samples.get(tr)!.push({
            it: done.reduce((a, x) => a + x.it, 0), wall, cpu: (cpu1.cpuUserMs + cpu1.cpuSystemMs - cpu0.cpuUserMs - cpu0.cpuSystemMs) / 1000,
            sys: (cpu1.cpuSystemMs - cpu0.cpuSystemMs) / 1000,
            vcs: (cpu1.voluntaryContextSwitches ?? 0) - (cpu0.voluntaryContextSwitches ?? 0), ics: (cpu1.involuntaryContextSwitches ?? 0) - (cpu0.involuntaryContextSwitches ?? 0),
            store: (cpu1.server.storeCpuMs - cpu0.server.storeCpuMs) / 1000,
          });
        }
        memcpy.push(measureMemcpyGBps(64 << 20, 3)); // the bound, interleaved with the reps
      }
      const w = wireBytes(wire);
      // lookup: read row (4d), write answer (w*d); push: read gradient (w*d), read+write row (8d), read+write Adagrad state (8d).
      const bytesPerRow = dim * (4 + w + w + 8 + 8);
      const bound = median(memcpy);
      for (const tr of transports) {
        const ss = samples.get(tr)!;
        const rowsPerCore = median(ss.map((x) => (x.it * uniquePerBatch) / x.cpu));
        const idsPerSec = median(ss.map((x) => (x.it * batch) / x.wall));
        const it = ss.reduce((a, x) => a + x.it, 0), wall = ss.reduce((a, x) => a + x.wall, 0), serverCpu = ss.reduce((a, x) => a + x.cpu, 0);
        results.push({
          dim, transport: tr, iterations: it, idsPerBatch: batch, uniquePerBatch, wallSeconds: wall, serverCpuSeconds: serverCpu,
          idsPerSec, rowsPerServerCoreSec: rowsPerCore, idsPerServerCoreSec: (rowsPerCore * batch) / uniquePerBatch,
          bytesPerRow, fractionOfBound: (rowsPerCore * bytesPerRow) / (bound * 1e9),
          systemShare: ss.reduce((a, x) => a + x.sys, 0) / serverCpu,
          sleepsPerIteration: ss.reduce((a, x) => a + x.vcs, 0) / it, preemptionsPerIteration: ss.reduce((a, x) => a + x.ics, 0) / it,
          serverUtilisation: serverCpu / wall,
          serverMsPerIteration: (1000 * serverCpu) / it, storeMsPerIteration: (1000 * ss.reduce((a, x) => a + x.store, 0)) / it,
        });
      }
    }
  } finally {
    stats.close();
    for (const w of [...clients.values()].flat()) { w.postMessage({ cmd: 'close' }); await new Promise((r) => w.once('exit', r)); }
    await cluster.stop();
  }
  return { memcpyGBps: median(memcpy), loadavg: { before, after: loadavg() }, wireDtype: wire, optimizer: optimizer.kind, dims: results };
}

function print(r: EmbeddingBenchResult): void {
  console.log(`embedding server bench: socket clients on TCP loopback, shm clients on the server's Unix socket (@other: the other way round), wire ${r.wireDtype}, optimizer ${r.optimizer}, single-core memcpy ${r.memcpyGBps.toFixed(2)} GB/s (read+write)`);
  console.log(`loadavg before ${r.loadavg.before.map((x) => x.toFixed(2)).join(' ')}, after ${r.loadavg.after.map((x) => x.toFixed(2)).join(' ')}`);
  console.log('dim  transport          ids/batch uniq/batch  ids/s(wall)  ids/server-core-s  rows/server-core-s  bytes/row  GB/s/core  of-bound  sys-share  sleeps/it  preempt/it  server-busy');
  for (const d of r.dims) {
    const gbps = (d.rowsPerServerCoreSec * d.bytesPerRow) / 1e9;
    console.log(`${String(d.dim).padStart(3)}  ${d.transport.padEnd(17)}  ${String(d.idsPerBatch).padStart(9)} ${d.uniquePerBatch.toFixed(0).padStart(10)}  ${(d.idsPerSec / 1e6).toFixed(3).padStart(9)} M  ${(d.idsPerServerCoreSec / 1e6).toFixed(3).padStart(15)} M  ${(d.rowsPerServerCoreSec / 1e6).toFixed(3).padStart(16)} M  ${String(d.bytesPerRow).padStart(9)}  ${gbps.toFixed(2).padStart(9)}  ${(100 * d.fractionOfBound).toFixed(1).padStart(6)}%  ${(100 * d.systemShare).toFixed(0).padStart(8)}%  ${d.sleepsPerIteration.toFixed(2).padStart(9)}  ${d.preemptionsPerIteration.toFixed(2).padStart(10)}  ${(100 * d.serverUtilisation).toFixed(0).padStart(10)}%`);
  }
  // Where each transport's server CPU goes, against the store calls alone (in-process, same batches, same run).
  console.log('dim  transport          server ms/it  store ms/it  | store at in-process cost  store slower than in-process  transport+event loop+GC');
  for (const d of r.dims) {
    const ref = r.dims.find((x) => x.dim === d.dim && x.transport === 'in-process');
    const pct = (x: number): string => `${(100 * x / d.serverMsPerIteration).toFixed(0)}%`;
    console.log(`${String(d.dim).padStart(3)}  ${d.transport.padEnd(17)}  ${d.serverMsPerIteration.toFixed(3).padStart(11)}  ${d.storeMsPerIteration.toFixed(3).padStart(11)}  | ${ref ? pct(Math.min(ref.storeMsPerIteration, d.storeMsPerIteration)).padStart(24) : '–'.padStart(24)}  ${ref ? pct(Math.max(0, d.storeMsPerIteration - ref.storeMsPerIteration)).padStart(28) : '–'.padStart(28)}  ${pct(d.serverMsPerIteration - d.storeMsPerIteration).padStart(23)}`);
  }
}

if (isMainThread && process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const quick = process.argv.includes('--quick');
  const secs = process.argv[2] && !process.argv[2].startsWith('--') ? Number(process.argv[2]) : undefined;
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const flags = (() => { try { const m = /flags\s*:(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8')); return m ? m[1]!.trim().split(/\s+/) : []; } catch { return []; } })();
  console.log(`machine: ${cpu} (${['avx2', 'fma', 'avx512f', 'avx512_bf16'].filter((f) => flags.includes(f)).join(' ')}), ${cpus().length} cpus`);
  const bi = process.argv.indexOf('--batch');
  const batch = bi > 0 ? Number(process.argv[bi + 1]) : undefined;
  if (batch !== undefined && !(Number.isInteger(batch) && batch > 0)) { console.error(`embedding-server-bench: --batch must be a positive integer (got ${process.argv[bi + 1]})`); process.exit(2); }
  const tcp = process.argv.includes('--other-connection');
  const transports: Transport[] = ['in-process', 'socket', 'shm', 'socket-replay', 'shm-replay'];
  if (tcp) transports.push('socket@other', 'shm@other', 'socket-replay@other', 'shm-replay@other');
  runEmbeddingServerBench({ transports, ...(quick ? { dims: [64], secondsPerDim: 1, reps: 3, warmSeconds: 1.5 } : {}), ...(secs ? { secondsPerDim: secs } : {}), ...(batch ? { batch } : {}) }).then((r) => { print(r); console.log(JSON.stringify(r)); }, (e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
