// Embedding parameter server throughput: one server process, one client process
// (this one), batches of Zipf-distributed ids; each iteration is a lookup and a
// gradient push of the same batch (the trainer's pattern). Reported per server
// core (ids / server CPU-second, from the server's own cpuUsage), next to this
// machine's single-core memcpy bandwidth measured in the same run.
// Two clients of the same server take turns (reps interleaved, medians reported): one
// over the socket only, one through shared memory (shm-region.ts: payloads and answers
// in a region both processes map; 16-byte descriptors on the socket).
// Run: node dist/bench/embedding-server-bench.js [secondsPerRep] [--quick]
import { cpus, loadavg } from 'node:os';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
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
  /** Interleaved repetitions per dim and transport (medians reported). */
  reps?: number;
  transports?: Array<'socket' | 'shm'>;
}

export interface EmbeddingBenchDim {
  dim: number;
  /** 'socket': payloads through the TCP connection; 'shm': through shared memory. */
  transport: 'socket' | 'shm';
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
function zipfBatches(n: number, s: number, batch: number, count: number): BigUint64Array[] {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let k = 0; k < n; k++) { acc += 1 / Math.pow(k + 1, s); cdf[k] = acc; }
  let x = 12345;
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
  const transports = o.transports ?? ['socket', 'shm'];
  const before = loadavg();
  const memcpy: number[] = [measureMemcpyGBps()];
  const optimizer = { kind: 'adagrad' as const, lr: 0.01, eps: 1e-10, initialAccumulator: 0 };
  const cluster = await launchEmbeddingServers({
    numShards: 1,
    config: { seed: 1, maxFrameBytes: 64 << 20, capacity: universe, optimizer, groups: dims.map((d, i) => ({ id: i + 1, dim: d })) },
  });
  const clients = {
    socket: await cluster.connect({ wireDtype: wire, sharedMemoryBytes: 0 }),
    shm: await cluster.connect({ wireDtype: wire }),
  };
  if (transports.includes('shm') && !clients.shm.sharedMemory[0]) throw new Error('embedding-server-bench: the shared-memory client fell back to the socket');
  const batches = zipfBatches(universe, zipfS, batch, 64);
  const uniquePerBatch = batches.reduce((a, b) => a + new Set(b).size, 0) / batches.length;
  const results: EmbeddingBenchDim[] = [];
  try {
    for (let gi = 0; gi < dims.length; gi++) {
      const group = gi + 1, dim = dims[gi]!;
      const samples = new Map<string, Array<{ it: number; wall: number; cpu: number }>>();
      for (const tr of transports) {
        const client = clients[tr];
        samples.set(tr, []);
        const iterate = async (ids: BigUint64Array): Promise<void> => {
          const batch = client.route(group, ids); // dedup + routing once for both calls, as a trainer does
          const rows = await client.lookup(group, batch);
          for (let k = 0; k < rows.length; k++) rows[k] *= 0.001; // a stand-in gradient
          await client.pushGrads(group, batch, rows);
        };
        for (const b of batches) await iterate(b); // warm-up: creates the hot rows, JIT-compiles both sides
      }
      for (let rep = 0; rep < reps; rep++) {
        for (const tr of transports) {
          const client = clients[tr];
          const iterate = async (ids: BigUint64Array): Promise<void> => {
            const batch = client.route(group, ids);
            const rows = await client.lookup(group, batch);
            for (let k = 0; k < rows.length; k++) rows[k] *= 0.001;
            await client.pushGrads(group, batch, rows);
          };
          const cpu0 = (await client.stats()).shards[0]!;
          const t0 = performance.now();
          let it = 0;
          const worker = async (): Promise<void> => {
            while (performance.now() - t0 < seconds * 1000) await iterate(batches[it++ % batches.length]!);
          };
          await Promise.all(Array.from({ length: inFlight }, worker));
          const wall = (performance.now() - t0) / 1000;
          const cpu1 = (await client.stats()).shards[0]!;
          samples.get(tr)!.push({ it, wall, cpu: (cpu1.cpuUserMs + cpu1.cpuSystemMs - cpu0.cpuUserMs - cpu0.cpuSystemMs) / 1000 });
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
        });
      }
    }
  } finally {
    clients.socket.close();
    clients.shm.close();
    await cluster.stop();
  }
  return { memcpyGBps: median(memcpy), loadavg: { before, after: loadavg() }, wireDtype: wire, optimizer: optimizer.kind, dims: results };
}

function print(r: EmbeddingBenchResult): void {
  console.log(`embedding server bench: wire ${r.wireDtype}, optimizer ${r.optimizer}, single-core memcpy ${r.memcpyGBps.toFixed(2)} GB/s (read+write)`);
  console.log(`loadavg before ${r.loadavg.before.map((x) => x.toFixed(2)).join(' ')}, after ${r.loadavg.after.map((x) => x.toFixed(2)).join(' ')}`);
  console.log('dim  transport  ids/batch uniq/batch  ids/s(wall)  ids/server-core-s  rows/server-core-s  bytes/row  GB/s/core  of-bound');
  for (const d of r.dims) {
    const gbps = (d.rowsPerServerCoreSec * d.bytesPerRow) / 1e9;
    console.log(`${String(d.dim).padStart(3)}  ${d.transport.padEnd(9)}  ${String(d.idsPerBatch).padStart(9)} ${d.uniquePerBatch.toFixed(0).padStart(10)}  ${(d.idsPerSec / 1e6).toFixed(3).padStart(9)} M  ${(d.idsPerServerCoreSec / 1e6).toFixed(3).padStart(15)} M  ${(d.rowsPerServerCoreSec / 1e6).toFixed(3).padStart(16)} M  ${String(d.bytesPerRow).padStart(9)}  ${gbps.toFixed(2).padStart(9)}  ${(100 * d.fractionOfBound).toFixed(1).padStart(6)}%`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const quick = process.argv.includes('--quick');
  const secs = process.argv[2] && !process.argv[2].startsWith('--') ? Number(process.argv[2]) : undefined;
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const flags = (() => { try { const m = /flags\s*:(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8')); return m ? m[1]!.trim().split(/\s+/) : []; } catch { return []; } })();
  console.log(`machine: ${cpu} (${['avx2', 'fma', 'avx512f', 'avx512_bf16'].filter((f) => flags.includes(f)).join(' ')}), ${cpus().length} cpus`);
  runEmbeddingServerBench({ ...(quick ? { dims: [64], secondsPerDim: 1, reps: 3 } : {}), ...(secs ? { secondsPerDim: secs } : {}) }).then((r) => { print(r); console.log(JSON.stringify(r)); }, (e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
