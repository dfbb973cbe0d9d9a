// Mixture-of-experts benchmarks (issue 9):
//   grouped  the grouped expert GEMM (one GEMM per expert over its contiguous block, one tape
//            node) vs a per-expert loop of linear layers, forward + backward;
//   model    training tokens/s of an MoE GPT vs the dense GPT with the same active compute
//            per token (moe-tiny vs gpt-tiny shapes);
//   a2a      all-to-all-v at 4 ranks: Athanor flat vs hierarchical (2 "nodes" on
//            127.0.0.2 / 127.0.0.3, TCP between them), and OpenMPI's MPI_Alltoallv from C
//            (bench/moe-alltoallv-mpi-peer.c) when mpicc/mpirun exist.
// Competitors are interleaved within each repetition; medians are reported with the machine
// and the load average before and after (the machine is shared).
//
//   node dist/bench/moe-bench.js [--quick] [grouped] [model] [a2a]
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { fromStorage, full } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { Rng } from '../src/core/rng.js';
import { backward } from '../src/autograd/tape.js';
import { groupedMatmul } from '../src/ops/moe.js';
import { linear, sum, slice, reshape, concat } from '../src/ops/index.js';
import { GPT } from '../src/nn/gpt.js';
import { presetConfig } from '../src/train/config.js';
import { TcpStoreServer } from '../src/runtime/tcp-store.js';
import { initProcessGroup } from '../src/runtime/init.js';
import { hierarchicalAllToAllV } from '../src/parallel/expert-parallel-a2a.js';
import { machineInfo } from './machine-info.js';
import { runCaptured } from './run-captured.js';

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), '..', '..');
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

function timeIt(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return (performance.now() - t0) / 1000;
}

/** Wall seconds and this process's CPU seconds (all its threads): on a loaded machine the CPU time is the steadier figure. */
function timeBoth(fn: () => void): [number, number] {
  const c0 = process.cpuUsage(), t0 = performance.now();
  fn();
  const c = process.cpuUsage(c0);
  return [(performance.now() - t0) / 1000, (c.user + c.system) / 1e6];
}

/** Grouped GEMM vs per-expert loop: E experts, S rows of width C → F, forward + backward. */
export function benchGrouped(quick: boolean): Record<string, number>[] {
  const rows: Record<string, number>[] = [];
  const reps = quick ? 5 : 15;
  for (const [E, S, C, F] of [[8, 4096, 128, 256], [8, 4096, 512, 1024], [32, 8192, 256, 512]] as const) {
    if (quick && C > 256) continue;
    const rng = new Rng(1);
    const x = new Float32Array(S * C), w = new Float32Array(E * F * C), b = new Float32Array(E * F);
    rng.fillNormal(x, 0, 1); rng.fillNormal(w, 0, 0.02);
    const counts = new Int32Array(E);
    // uneven blocks, as routing makes them
    let left = S;
    for (let e = 0; e < E - 1; e++) { counts[e] = Math.floor((S / E) * (0.5 + ((e * 37) % 10) / 10)); left -= counts[e]!; }
    counts[E - 1] = left;
    const grouped = () => scope(() => {
      const xt = fromStorage(x, [S, C], 'float32'), wt = fromStorage(w, [E, F, C], 'float32'), bt = fromStorage(b, [E, F], 'float32');
      xt.requiresGrad = wt.requiresGrad = bt.requiresGrad = true;
      backward(sum(groupedMatmul(xt, wt, bt, counts)), { grad: full([], 1) });
    });
    const loop = () => scope(() => {
      const xt = fromStorage(x, [S, C], 'float32'), wt = fromStorage(w, [E, F, C], 'float32'), bt = fromStorage(b, [E, F], 'float32');
      xt.requiresGrad = wt.requiresGrad = bt.requiresGrad = true;
      const outs = [];
      let o = 0;
      for (let e = 0; e < E; e++) {
        const n = counts[e]!;
        outs.push(linear(slice(xt, 0, o, o + n), reshape(slice(wt, 0, e, e + 1), [F, C]), reshape(slice(bt, 0, e, e + 1), [F])));
        o += n;
      }
      backward(sum(concat(outs, 0)), { grad: full([], 1) });
    });
    grouped(); loop();
    const tg: number[] = [], tl: number[] = [], cg: number[] = [], cl: number[] = [];
    const g = () => { const [w, c] = timeBoth(grouped); tg.push(w); cg.push(c); };
    const l = () => { const [w, c] = timeBoth(loop); tl.push(w); cl.push(c); };
    for (let r = 0; r < reps; r++) {
      if (r % 2) { g(); l(); } else { l(); g(); }
    }
    const flops = 3 * 2 * S * C * F;
    rows.push({ E, S, C, F, groupedMs: 1e3 * median(tg), loopMs: 1e3 * median(tl), groupedGflops: flops / median(tg) / 1e9, loopGflops: flops / median(tl) / 1e9, groupedCpuMs: 1e3 * median(cg), loopCpuMs: 1e3 * median(cl) });
  }
  return rows;
}

/** Training tokens/s (forward + backward) of moe-tiny vs gpt-tiny shapes (equal active MLP compute per token). */
export function benchModel(quick: boolean): Record<string, number | string>[] {
  const reps = quick ? 3 : 8;
  const B = quick ? 4 : 16, T = 128;
  const models = ['gpt-tiny', 'moe-tiny'].map((p) => ({ name: p, model: new GPT(presetConfig(p).model, { seed: 1 }) }));
  const rng = new Rng(3);
  const ids = new Int32Array(B * T), tg = new Int32Array(B * T);
  for (let i = 0; i < ids.length; i++) { ids[i] = Math.floor(rng.uniform() * 2048); tg[i] = Math.floor(rng.uniform() * 2048); }
  const step = (m: GPT) => scope(() => {
    const l = m.loss(fromStorage(ids, [B, T], 'int32'), fromStorage(tg, [B, T], 'int32'));
    backward(l);
    for (const p of m.parameters()) { p.grad?.dispose(); p.grad = null; }
    m.takeMoeStats();
  });
  const times = new Map<string, number[]>(models.map((m) => [m.name, []]));
  const cpu = new Map<string, number[]>(models.map((m) => [m.name, []]));
  for (const m of models) step(m.model);
  for (let r = 0; r < reps; r++) {
    for (const m of (r % 2 ? [...models].reverse() : models)) {
      const [w, c] = timeBoth(() => step(m.model));
      times.get(m.name)!.push(w);
      cpu.get(m.name)!.push(c);
    }
  }
  return models.map((m) => ({ model: m.name, params: m.model.numParameters(), tokensPerSec: (B * T) / median(times.get(m.name)!), tokensPerCpuSec: (B * T) / median(cpu.get(m.name)!) }));
}

// ------------------------------------------------------------------ all-to-all

async function a2aWorker(): Promise<void> {
  const pg = await initProcessGroup();
  const sizes = (process.env.BENCH_SIZES ?? '').split(',').map(Number);
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const P = pg.size;
  const out: Record<string, Record<number, number>> = { flat: {}, hierarchical: {}, hierarchicalKnown: {} };
  const nodeSize = pg.localWorldSize, myNode = Math.floor(pg.rank / nodeSize);
  for (const bytes of sizes) {
    const n = bytes / 4;
    const input = new Float32Array(P * n), a = new Float32Array(P * n), h = new Float32Array(P * n), hk = new Float32Array(P * n);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7 + pg.rank) % 13;
    const counts = new Array<number>(P).fill(n);
    // sub-groups are created once per rank list (every member in the same order), before timing
    const groups = new Map<string, ReturnType<typeof pg.newGroup>>();
    const sub = (r: number[]) => { const k = r.join(','); let g = groups.get(k); if (!g) { g = pg.newGroup(r); groups.set(k, g); } return g; };
    sub(Array.from({ length: nodeSize }, (_, l) => myNode * nodeSize + l));
    sub(Array.from({ length: P / nodeSize }, (_, m) => m * nodeSize + (pg.rank % nodeSize)));
    // What expert parallelism has after its count exchange: the node members' send counts.
    const nodeSendCounts = new Int32Array(nodeSize * P).fill(n);
    const algos = {
      flat: () => pg.allToAllV(input, counts, a, counts).wait(),
      hierarchical: () => hierarchicalAllToAllV(pg, sub, input, counts, h, counts, { nodeSize }),
      hierarchicalKnown: () => hierarchicalAllToAllV(pg, sub, input, counts, hk, counts, { nodeSize, nodeSendCounts }),
    };
    type Algo = keyof typeof algos;
    const names: Algo[] = ['flat', 'hierarchical', 'hierarchicalKnown'];
    for (const name of names) await algos[name]();
    const ts: Record<string, number[]> = { flat: [], hierarchical: [], hierarchicalKnown: [] };
    for (let k = 0; k < reps; k++) {
      for (const name of (k % 2 ? [...names].reverse() : names)) {
        await pg.barrier().wait();
        const t0 = performance.now();
        await algos[name]();
        ts[name]!.push((performance.now() - t0) / 1000);
      }
    }
    for (let i = 0; i < a.length; i++) if (a[i] !== h[i] || a[i] !== hk[i]) throw new Error(`rank ${pg.rank}: hierarchical all-to-all differs from flat at ${i}`);
    for (const name of names) out[name]![bytes] = median(ts[name]!);
  }
  if (pg.rank === 0) process.stdout.write(`BENCH ${JSON.stringify(out)}\n`);
  await pg.destroy();
}


export async function benchA2a(quick: boolean): Promise<{ rows: Record<string, number | null>[]; notes: string[] }> {
  const P = 4, sizes = quick ? [16384, 262144] : [4096, 65536, 262144, 1048576, 4194304];
  const reps = quick ? 5 : 9;
  const notes: string[] = [];
  const token = randomBytes(16).toString('hex');
  const store = await TcpStoreServer.start({ host: '127.0.0.1', port: 0, token });
  let ours: Record<string, Record<number, number>>;
  try {
    const rs = await Promise.all(Array.from({ length: P }, (_, r) => runCaptured(process.execPath, [HERE, '--a2a-worker'], {
      ATHANOR_RANK: String(r), ATHANOR_WORLD_SIZE: String(P), ATHANOR_LOCAL_RANK: String(r % 2), ATHANOR_LOCAL_WORLD_SIZE: '2',
      ATHANOR_HOST_ID: `node${r >> 1}`, ATHANOR_BIND_ADDR: `127.0.0.${2 + (r >> 1)}`,
      ATHANOR_MASTER_ADDR: '127.0.0.1', ATHANOR_MASTER_PORT: String(store.port), ATHANOR_STORE_TOKEN: token, ATHANOR_STORE_HOSTED: '1',
      BENCH_SIZES: sizes.join(','), BENCH_REPS: String(reps),
    })));
    const line = rs[0]!.stdout.split('\n').find((l) => l.startsWith('BENCH '));
    if (rs.some((r) => r.code !== 0) || !line) throw new Error(`moe-bench a2a worker failed:\n${rs.map((r) => r.stderr).join('\n')}`);
    ours = JSON.parse(line.slice(6)) as typeof ours;
  } finally {
    await store.close();
  }
  let mpi: Record<number, number> | null = null;
  if (spawnSync('mpicc', ['--version']).status === 0) {
    const exe = path.join(ROOT, 'build', 'moe-alltoallv-mpi-peer');
    mkdirSync(path.dirname(exe), { recursive: true });
    const cc = spawnSync('mpicc', ['-O2', '-o', exe, path.join(ROOT, 'bench', 'moe-alltoallv-mpi-peer.c')], { encoding: 'utf8' });
    if (cc.status === 0) {
      const r = await runCaptured('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', String(P), exe, String(reps), ...sizes.map(String)], {});
      mpi = {};
      for (const l of r.stdout.split('\n')) { const [b, t] = l.trim().split(/\s+/); if (b && t) mpi[Number(b)] = Number(t); }
      notes.push('MPI_Alltoallv: OpenMPI on one host (shared memory between all 4 ranks), so it is the same-host ceiling, not 2 nodes');
    } else notes.push(`MPI_Alltoallv skipped: mpicc failed: ${cc.stderr}`);
  } else notes.push('MPI_Alltoallv skipped: mpicc not installed');
  // algbw: bytes each rank sends to others per second
  const bw = (bytes: number, t: number | undefined) => (t ? ((P - 1) * bytes) / t / 1e6 : null);
  const rows = sizes.map((b) => ({
    bytesPerPair: b, flatMBs: bw(b, ours.flat![b]), hierarchicalMBs: bw(b, ours.hierarchical![b]), hierarchicalKnownCountsMBs: bw(b, ours.hierarchicalKnown![b]), mpiMBs: mpi ? bw(b, mpi[b]) : null,
  }));
  notes.push('hierarchical: 2 nodes × 2 ranks (127.0.0.2 / 127.0.0.3); "known counts" = the node members\' send counts already known, as in expert parallelism after its count exchange');
  return { rows, notes };
}

export interface MoeBenchResult {
  grouped: ReturnType<typeof benchGrouped>;
  model: ReturnType<typeof benchModel>;
  a2a: Awaited<ReturnType<typeof benchA2a>>;
}

/** All three parts, competitors interleaved (for bench/run-all.ts, which records machine and load). */
export async function runMoeBench(quick: boolean, log: (line: string) => void = () => undefined): Promise<MoeBenchResult> {
  const grouped = benchGrouped(quick);
  log(`grouped GEMM: ${grouped.map((r) => `E${r.E} S${r.S} C${r.C} F${r.F} ${(r.loopMs! / r.groupedMs!).toFixed(2)}x`).join(', ')}`);
  const model = benchModel(quick);
  log(`tokens/s: ${model.map((r) => `${r.model} ${Math.round(r.tokensPerSec as number)}`).join(', ')}`);
  const a2a = await benchA2a(quick);
  log(`all-to-all-v MB/s per rank: ${a2a.rows.map((r) => `${r.bytesPerPair} B flat ${r.flatMBs?.toFixed(0)} hier ${r.hierarchicalMBs?.toFixed(0)} mpi ${r.mpiMBs?.toFixed(0) ?? '-'}`).join('; ')}`);
  return { grouped, model, a2a };
}

async function main(): Promise<void> {
  if (process.argv.includes('--a2a-worker')) { await a2aWorker(); return; }
  const quick = process.argv.includes('--quick');
  const want = ['grouped', 'model', 'a2a'].filter((n) => process.argv.includes(n));
  const which = want.length ? want : ['grouped', 'model', 'a2a'];
  const before = os.loadavg();
  const m = await machineInfo(ROOT);
  console.log(`machine: ${m.cpuModel}, ${m.logicalCpus} logical CPUs, ISA avx2=${/ avx2 /.test(cpuFlags())} avx512f=${/ avx512f /.test(cpuFlags())} avx512_bf16=${/ avx512_bf16 /.test(cpuFlags())}; load before ${before.map((x) => x.toFixed(2)).join(' ')}`);
  const result: Record<string, unknown> = { machine: m, loadBefore: before };
  if (which.includes('grouped')) { const r = benchGrouped(quick); result.grouped = r; console.table(r); }
  if (which.includes('model')) { const r = benchModel(quick); result.model = r; console.table(r); }
  if (which.includes('a2a')) { const r = await benchA2a(quick); result.a2a = r; console.table(r.rows); for (const n of r.notes) console.log(`note: ${n}`); }
  const after = os.loadavg();
  result.loadAfter = after;
  console.log(`load after ${after.map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`RESULT ${JSON.stringify(result)}`);
}

function cpuFlags(): string {
  try { return spawnSync('cat', ['/proc/cpuinfo'], { encoding: 'utf8' }).stdout.split('\n').find((l) => l.startsWith('flags')) + ' '; } catch { return ''; }
}

if (process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === import.meta.url) {
  main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
}
