// Allreduce bus bandwidth (NCCL-tests definition: busbw = 2(n-1)/n * bytes / time) vs message
// size, 2 ranks, for Athanor over tcp, unix and MPI (each on the main thread, and unix and MPI
// also through the communication thread), against OpenMPI's MPI_Allreduce called
// from C (bench/allreduce-mpi-peer.c, compiled with mpicc at bench time).
//
// The machine is shared and noisy, so competitors are interleaved: each of `rounds` rounds
// launches every competitor once (in a rotating order), each launch times `reps` runs per size
// and reports their median; the table shows the median over rounds, and the spread over rounds
// for large messages. The load average is printed before and after.
//
// Point-to-point: one-way bandwidth (rank 0 -> 1) and 4 KiB ping-pong latency for every
// column, the C peer's MPI_Send/MPI_Recv included.
//
//   node dist/bench/allreduce-bench.js [--quick] [--max-bytes N] [--reps N] [--rounds N] [--p2p-bytes N]
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { initProcessGroup } from '../src/runtime/init.js';
import type { Communicator } from '../src/runtime/communicator.js';
import { mpiUnavailableReason } from '../src/runtime/mpi.js';
import { CommThread } from '../src/runtime/comm-thread.js';
import { readFileSync } from 'node:fs';
import { runCaptured } from './run-captured.js';

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), '..', '..');

export interface BenchRow { bytes: number; busbw: Record<string, number | null> }
export interface BenchResult {
  world: number; rows: BenchRow[];
  /** One-way point-to-point bandwidth (bytes/s) at p2pBytes, and 4 KiB ping-pong half round trip (s), per column. */
  p2p: Record<string, number>; p2pLatency: Record<string, number>; p2pBytes: number;
  columns: string[]; machine: string; notes: string[];
  /** busbw per round, per column, per size (for spreads). */
  rounds: Record<string, Record<number, number[]>>;
  load: { before: number[]; after: number[] };
}

function sizes(maxBytes: number): number[] {
  const out: number[] = [];
  for (let b = 4096; b <= maxBytes; b *= 4) out.push(b);
  return out;
}
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };
const busbw = (bytes: number, n: number, t: number): number => (2 * (n - 1) / n) * bytes / t;

async function timeAllreduce(pg: Communicator, bytes: number, reps: number): Promise<number> {
  const buf = new Float32Array(bytes / 4);
  for (let i = 0; i < buf.length; i++) buf[i] = i % 17;
  const r = bytes <= 1 << 20 ? reps * 10 : reps;
  // Warm-up: the JIT needs a few dozen calls before small-message latency settles.
  for (let k = bytes <= 1 << 20 ? 50 : 1; k > 0; k--) await pg.allReduce(buf);
  const ts: number[] = [];
  for (let k = 0; k < r; k++) {
    await pg.barrier();
    const t0 = performance.now();
    await pg.allReduce(buf);
    ts.push((performance.now() - t0) / 1000);
  }
  return median(ts);
}

/** One-way point-to-point bandwidth rank 0 -> rank 1 (the transport's ceiling). */
async function timeP2P(pg: Communicator, bytes: number, reps: number): Promise<number> {
  const buf = new Float32Array(bytes / 4);
  const ts: number[] = [];
  for (let k = 0; k <= reps; k++) {
    await pg.barrier();
    const t0 = performance.now();
    if (pg.rank === 0) await pg.send(buf, 1); else if (pg.rank === 1) await pg.recv(buf, 0);
    await pg.barrier();
    if (k > 0) ts.push((performance.now() - t0) / 1000);
  }
  return bytes / median(ts);
}

/** Ping-pong between ranks 0 and 1: half the round trip, seconds (point-to-point latency). */
async function timePingPong(pg: Communicator, bytes: number, reps: number): Promise<number> {
  const buf = new Float32Array(bytes / 4);
  const ts: number[] = [];
  for (let k = 0; k < reps + 20; k++) {
    const t0 = performance.now();
    if (pg.rank === 0) { await pg.send(buf, 1, 3); await pg.recv(buf, 1, 4); }
    else if (pg.rank === 1) { await pg.recv(buf, 0, 3); await pg.send(buf, 0, 4); }
    if (k >= 20) ts.push((performance.now() - t0) / 2000);
  }
  return median(ts);
}

/**
 * Runs inside each rank (under mpirun, or under the launcher). A column is a backend, or
 * '<backend>-thread': the same collectives posted to the communication thread (the path
 * data-parallel gradients take), timed from the main thread.
 */
async function worker(): Promise<void> {
  const maxBytes = Number(process.env.BENCH_MAX_BYTES ?? 256 << 20);
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const p2pBytes = Number(process.env.BENCH_P2P_BYTES ?? 64 << 20);
  const columns = (process.env.BENCH_BACKENDS ?? 'tcp,unix,mpi').split(',');
  const res: Record<string, Record<number, number>> = {};
  const p2p: Record<string, number> = {};
  const lat: Record<string, number> = {};
  for (const col of columns) {
    const [be, via] = col.split('-') as ['tcp' | 'unix' | 'mpi', string | undefined];
    const pg = await initProcessGroup({ backend: be });
    const ct = via === 'thread' ? await CommThread.start(pg, { prefix: `bench/${col}` }) : null;
    const comm: Communicator = ct ?? pg;
    res[col] = {};
    for (const b of sizes(maxBytes)) res[col]![b] = await timeAllreduce(comm, b, reps);
    p2p[col] = await timeP2P(comm, p2pBytes, reps);
    lat[col] = await timePingPong(comm, 4096, reps * 20);
    await comm.barrier();
    await ct?.close();
    await pg.destroy();
  }
  if (Number(process.env.OMPI_COMM_WORLD_RANK ?? process.env.ATHANOR_RANK ?? 0) === 0) console.log(`BENCH ${JSON.stringify({ res, p2p, lat })}`);
}


// Measured on the 2-core dev box: OpenMPI's polling needs its default core binding (unbound,
// small MPI allreduces took ~30 ms instead of ~70 us), while the socket transports lose ~10x
// when node (main thread + libuv/GC threads) is pinned to one core. So: two runs.
const MPIRUN = ['--allow-run-as-root', '--oversubscribe', '-np', '2'];
const MPIRUN_UNBOUND = ['--allow-run-as-root', '--oversubscribe', '--bind-to', 'none', '-np', '2'];

/** CPU model and the ISA flags that matter here, from /proc/cpuinfo. */
function machineLine(): string {
  let flags = '';
  try {
    const f = /^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(' ') ?? [];
    flags = ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile'].filter((x) => f.includes(x)).join(' ');
  } catch { flags = 'unknown'; }
  return `${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.cpus().length} logical CPUs, flags: ${flags || 'none of avx2/fma/avx512'}`;
}

export async function runAllreduceBench(o: { maxBytes?: number; reps?: number; rounds?: number; p2pBytes?: number; log?: (s: string) => void } = {}): Promise<BenchResult> {
  const maxBytes = o.maxBytes ?? 256 << 20, reps = Math.max(1, o.reps ?? 5), nRounds = Math.max(1, o.rounds ?? 5);
  const p2pBytes = o.p2pBytes ?? Math.min(64 << 20, maxBytes);
  const log = o.log ?? ((s: string) => process.stdout.write(`${s}\n`));
  const notes: string[] = [];
  const world = 2;
  const env = { BENCH_MAX_BYTES: String(maxBytes), BENCH_REPS: String(reps), BENCH_P2P_BYTES: String(p2pBytes) };
  const mpiMissing = mpiUnavailableReason() ?? (spawnSync('mpirun', ['--version']).error ? 'mpirun not on PATH' : null);
  const machine = machineLine();
  const load = { before: os.loadavg(), after: [] as number[] };
  // Per column and size, one time (median of `reps`) per round.
  const times: Record<string, Record<number, number[]>> = {};
  const p2pRounds: Record<string, number[]> = {};
  const latRounds: Record<string, number[]> = {};
  const record = (res: Record<string, Record<number, number>>, p2p: Record<string, number>, lat: Record<string, number>): void => {
    for (const [c, bySize] of Object.entries(res)) for (const [b, t] of Object.entries(bySize)) ((times[c] ??= {})[Number(b)] ??= []).push(t);
    for (const [c, v] of Object.entries(p2p)) (p2pRounds[c] ??= []).push(v);
    for (const [c, v] of Object.entries(lat)) (latRounds[c] ??= []).push(v);
  };
  const penv = ['-x', 'BENCH_MAX_BYTES', '-x', 'BENCH_REPS', '-x', 'BENCH_P2P_BYTES', '-x', 'BENCH_BACKENDS'];
  const athanor = async (flags: readonly string[] | null, backends: string): Promise<void> => {
    const r = flags
      ? await runCaptured('mpirun', [...flags, ...penv, process.execPath, HERE, '--worker'], { ...env, BENCH_BACKENDS: backends })
      : await runCaptured(process.execPath, [path.join(ROOT, 'dist/src/runtime/launcher.js'), '--nproc-per-node', '2', '--', 'node', HERE, '--worker'], { ...env, BENCH_BACKENDS: backends });
    const line = r.stdout.split('\n').find((l) => l.includes('BENCH '));
    if (r.code !== 0 || !line) throw new Error(`allreduce-bench: worker run failed (${r.code})\n${r.stderr}\n${r.stdout}`);
    const got = JSON.parse(line.slice(line.indexOf('BENCH ') + 6)) as { res: Record<string, Record<number, number>>; p2p: Record<string, number>; lat: Record<string, number> };
    record(got.res, got.p2p, got.lat);
  };
  // Reference: OpenMPI from C.
  let exe: string | null = null;
  if (!mpiMissing) {
    exe = path.join(ROOT, 'build', 'allreduce-mpi-peer');
    mkdirSync(path.dirname(exe), { recursive: true });
    const cc = spawnSync('mpicc', ['-O2', '-o', exe, path.join(ROOT, 'bench', 'allreduce-mpi-peer.c')], { encoding: 'utf8' });
    if (cc.status !== 0) { notes.push(`C reference skipped: mpicc failed: ${cc.stderr || cc.error?.message}`); exe = null; }
  } else notes.push(`MPI columns skipped: ${mpiMissing}`);
  const mpiC = async (): Promise<void> => {
    const r = await runCaptured('mpirun', [...MPIRUN, exe!, String(reps), `p2p=${p2pBytes}`, ...sizes(maxBytes).map(String)]);
    const ref: Record<number, number> = {};
    const p2p: Record<string, number> = {}, lat: Record<string, number> = {};
    for (const l of r.stdout.split('\n')) {
      const [b, t, x] = l.trim().split(/\s+/);
      if (b === 'p2p') p2p['mpi-c'] = Number(t) / Number(x);
      else if (b === 'pingpong') lat['mpi-c'] = Number(x);
      else if (b && t) ref[Number(b)] = Number(t);
    }
    record({ 'mpi-c': ref }, p2p, lat);
  };
  // Socket columns share a launch (order alternating between rounds), MPI ones another.
  const sockets = (k: number): string => (k % 2 ? 'unix-thread,unix,tcp' : 'tcp,unix,unix-thread');
  const mpis = (k: number): string => (k % 2 ? 'mpi-thread,mpi' : 'mpi,mpi-thread');
  const competitors: ((k: number) => Promise<void>)[] = [];
  if (mpiMissing) competitors.push((k) => athanor(null, sockets(k)));
  else {
    competitors.push((k) => athanor(MPIRUN_UNBOUND, sockets(k)), (k) => athanor(MPIRUN, mpis(k)));
    if (exe) competitors.push(mpiC);
  }
  for (let k = 0; k < nRounds; k++) {
    for (let i = 0; i < competitors.length; i++) await competitors[(i + k) % competitors.length]!(k);
  }
  load.after = os.loadavg();
  const cols = ['tcp', 'unix', 'unix-thread', 'mpi', 'mpi-thread', 'mpi-c'].filter((c) => times[c]);
  const rounds: BenchResult['rounds'] = {};
  for (const c of cols) for (const [b, ts] of Object.entries(times[c] ?? {})) (rounds[c] ??= {})[Number(b)] = ts.map((t) => busbw(Number(b), world, t));
  const rows: BenchRow[] = sizes(maxBytes).map((b) => {
    const bw: Record<string, number | null> = {};
    for (const c of cols) { const ts = times[c]?.[b]; bw[c] = ts?.length ? busbw(b, world, median(ts)) : null; }
    return { bytes: b, busbw: bw };
  });
  const p2p: Record<string, number> = {}, p2pLatency: Record<string, number> = {};
  for (const [c, v] of Object.entries(p2pRounds)) p2p[c] = median(v);
  for (const [c, v] of Object.entries(latRounds)) p2pLatency[c] = median(v);
  const fmtB = (b: number): string => (b >= 1 << 20 ? `${b / (1 << 20)} MiB` : `${b / 1024} KiB`);
  const gb = (x: number | null | undefined): string => (x ? (x / 1e9).toFixed(3) : '-');
  const ratio = (x: number | null | undefined, y: number | null | undefined): string => (x && y ? (x / y).toFixed(2) : '-');
  const la = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');
  const ath = cols.filter((c) => c !== 'mpi-c');
  log(`machine: ${machine}`);
  log(`allreduce float32 sum, ${world} ranks, busbw GB/s (2(n-1)/n * bytes / time): median over ${nRounds} interleaved rounds of the median of ${reps} reps (x10 up to 1 MiB)`);
  log(`columns: tcp/unix/mpi = the transport on the main thread; *-thread = posted to the communication thread (the data-parallel gradient path); mpi-c = MPI_Allreduce from C`);
  log(`load average before: ${la(load.before)}; after: ${la(load.after)} (${os.cpus().length} cores)`);
  log(['size', ...cols, ...(times['mpi-c'] ? ath.map((c) => `${c}/C`) : [])].map((s) => s.padStart(13)).join(''));
  for (const r of rows) {
    const c = r.busbw;
    log([fmtB(r.bytes), ...cols.map((k) => gb(c[k])), ...(times['mpi-c'] ? ath.map((k) => ratio(c[k], c['mpi-c'])) : [])].map((s) => s.padStart(13)).join(''));
  }
  log('spread over rounds (min-max busbw GB/s), messages >= 16 MiB:');
  for (const r of rows.filter((x) => x.bytes >= 16 << 20)) {
    log(`${fmtB(r.bytes).padStart(13)}${cols.map((c) => { const v = rounds[c]?.[r.bytes]; return (v?.length ? `${(Math.min(...v) / 1e9).toFixed(2)}-${(Math.max(...v) / 1e9).toFixed(2)}` : '-').padStart(13); }).join('')}`);
  }
  const lat = rows[0];
  if (lat) log(`allreduce ${fmtB(lat.bytes)} latency (us): ${cols.map((c) => { const t = times[c]?.[lat.bytes]; return `${c} ${t?.length ? (median(t) * 1e6).toFixed(1) : '-'}`; }).join(', ')}`);
  log(`point-to-point (median over rounds): one-way ${fmtB(p2pBytes)} GB/s | 4 KiB ping-pong half round trip us`);
  for (const c of cols) if (p2p[c] !== undefined) log(`${c.padStart(13)} ${(p2p[c]! / 1e9).toFixed(3).padStart(9)} | ${p2pLatency[c] !== undefined ? (p2pLatency[c]! * 1e6).toFixed(1) : '-'}`);
  for (const n of notes) log(`note: ${n}`);
  return { world, rows, p2p, p2pLatency, p2pBytes, columns: cols, machine, notes, rounds, load };
}

if (process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === import.meta.url) {
  if (process.argv.includes('--worker')) {
    worker().catch((e) => { console.error(e); process.exit(1); });
  } else {
    const arg = (n: string): number | undefined => { const i = process.argv.indexOf(n); return i > 0 ? Number(process.argv[i + 1]) : undefined; };
    // --quick: up to 4 MiB, 3 reps, 3 rounds (about a minute); the defaults are for a quiet machine.
    const quick = process.argv.includes('--quick');
    runAllreduceBench({ maxBytes: arg('--max-bytes') ?? (quick ? 4 << 20 : undefined), reps: arg('--reps') ?? (quick ? 3 : undefined), rounds: arg('--rounds') ?? (quick ? 3 : undefined), p2pBytes: arg('--p2p-bytes') }).catch((e) => { console.error(e); process.exit(1); });
  }
}
