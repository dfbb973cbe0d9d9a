// In-process embedding store throughput (no socket, no wire codec): GroupTable.lookup +
// push (Adagrad) of Zipf batches over a fully resident table, per core, against the
// single-core memcpy bandwidth (the server bench's bound) measured interleaved in the same run. Native batch kernels and the
// TypeScript reference loops are run side by side. Isolates the store from the server's
// transport, which embedding-server-bench.ts measures end to end.
// Run: node dist/bench/embedding-store-bench.js [--quick]
import { cpus, loadavg } from 'node:os';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseServerConfig } from '../src/recsys/embedding-config.js';
import { GroupTable } from '../src/recsys/embedding-store.js';
import { idsToPairs } from '../src/recsys/embedding-hash.js';
import { measureMemcpyGBps } from './embedding-server-bench.js';

function zipfIds(n: number, s: number, batch: number, seed: number): number[] {
  const cdf = new Float64Array(n);
  let acc = 0;
  for (let k = 0; k < n; k++) { acc += 1 / Math.pow(k + 1, s); cdf[k] = acc; }
  let x = seed;
  return Array.from({ length: batch }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const u = (x / 4294967296) * acc;
    let lo = 0, hi = n - 1;
    while (lo < hi) { const m = (lo + hi) >> 1; if (cdf[m]! < u) lo = m + 1; else hi = m; }
    return lo;
  });
}

const median = (a: number[]): number => [...a].sort((x, y) => x - y)[a.length >> 1]!;

export function runStoreBench(quick: boolean): void {
  const universe = quick ? 1 << 18 : 1 << 20, batch = 4096, reps = quick ? 5 : 9, iters = quick ? 20 : 50;
  const flags = (() => { try { const m = /flags\s*:(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8')); return m ? m[1]!.trim().split(/\s+/) : []; } catch { return []; } })();
  console.log(`machine: ${cpus()[0]?.model} (${['avx2', 'fma', 'avx512f'].filter((f) => flags.includes(f)).join(' ')}), loadavg before ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('dim  path    rows/core-s  GB/s(essential)  memcpy GB/s  of-bound');
  for (const dim of [16, 64, 128]) {
    const cfg = parseServerConfig({ seed: 1, groups: [{ id: 1, dim, capacity: universe, optimizer: { kind: 'adagrad', lr: 0.01, eps: 1e-10 } }] }, 'bench');
    const tables = { native: new GroupTable(cfg.groups[0]!, 1), ts: new GroupTable(cfg.groups[0]!, 1, { native: false }) };
    // Distinct ids per batch (the client dedups), all resident after a fill pass.
    const batches = Array.from({ length: 16 }, (_, b) => [...new Set(zipfIds(universe, 1.05, batch, 7 + b))]);
    const pairs = batches.map((ids) => idsToPairs(1, ids));
    const fill = idsToPairs(1, Array.from({ length: universe }, (_, i) => i));
    const out = new Float32Array(batch * dim), grads = new Float32Array(batch * dim).fill(1e-3);
    for (const t of Object.values(tables)) for (let o = 0; o < universe; o += batch) t.lookup(fill.subarray(2 * o, 2 * (o + batch)), batch, out, 0, false);
    const bytesPerRow = dim * (4 + 4 + 8 + 8); // lookup read + answer write, push read+write row, read+write state
    const rows = { native: [] as number[], ts: [] as number[], memcpy: [] as number[] };
    let step = 1;
    for (let r = 0; r < reps; r++) {
      for (const [name, t] of Object.entries(tables) as Array<['native' | 'ts', GroupTable]>) {
        let n = 0;
        const t0 = process.cpuUsage();
        for (let i = 0; i < iters; i++, step++) {
          const b = i % batches.length, nb = batches[b]!.length;
          t.lookup(pairs[b]!, nb, out, step, false);
          t.push(pairs[b]!, nb, grads, step);
          n += nb;
        }
        const c = process.cpuUsage(t0);
        rows[name].push(n / ((c.user + c.system) / 1e6));
      }
      rows.memcpy.push(measureMemcpyGBps(64 << 20, 3) * 1e9 / bytesPerRow); // the bound, interleaved
    }
    const bound = median(rows.memcpy);
    for (const name of ['native', 'ts'] as const) {
      const m = median(rows[name]);
      console.log(`${String(dim).padStart(3)}  ${name.padEnd(6)}  ${(m / 1e6).toFixed(3).padStart(9)} M  ${(m * bytesPerRow / 1e9).toFixed(2).padStart(15)}  ${(bound * bytesPerRow / 1e9).toFixed(2).padStart(11)}  ${(100 * m / bound).toFixed(1).padStart(6)}%`);
    }
  }
  console.log(`loadavg after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) runStoreBench(process.argv.includes('--quick'));
