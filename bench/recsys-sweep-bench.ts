// Hybrid-training sweep under an emulated network: staleness k x round trip x bandwidth
// cap x trainers -> samples/s and test AUC, through the full `athanor recsys` path (real
// server and trainer processes; a loopback proxy per server adds the delay and cap).
//
// Workload (issue 13 minimums): 26 categorical fields with Zipf(1.05) ids over 10^6
// values per field, 13 dense features, 10^6 training samples, 2 and 4 trainers.
// Cells run in an interleaved order (k innermost), so a change of machine load shows up
// across k rather than inside one k; the load average is recorded around every cell.
//
// Run:   node dist/bench/recsys-sweep-bench.js [--quick] [--out file.json]
//          [--rows N] [--test-rows N] [--vocab N] [--trainers 2,4] [--ks 0,1,2,4,8]
//          [--rtts 0,1,5,20] [--bw 0,25] (MB/s per direction per server; 0 = uncapped)
//          [--correction on|off|both] [--reps N] (passes over the grid; medians reported)
//          [--rank-link off|same] (same: the cell's RTT and cap also between trainer ranks,
//          i.e. on the dense all-reduce, through ATHANOR_EMULATE_LINK; default off)
//          [--rows-path auto|socket] (auto, the default: a trainer on the servers' host shares
//          memory with them, so only its requests cross the proxy and take its delay, the
//          latency-only emulation of the issue's "delay added to each request"; a capped cell
//          turns that off, as the cap must apply to the rows. socket: every cell's rows cross
//          the proxy over TCP, paying the socket copies, on the same cores, of servers that
//          would run elsewhere)
//        node dist/bench/recsys-sweep-bench.js --summarize a.json,b.json  (tables of saved runs together)
// --quick: 60k samples, vocab 10^5, 2 trainers, k in {0,4}, RTT in {0,5} ms, uncapped.
import { cpus, loadavg, tmpdir } from 'node:os';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { generateCriteo } from '../src/recsys/criteo-generate.js';
import { recsysMain } from '../src/recsys/recsys-main.js';
import type { RecsysResult } from '../src/recsys/recsys-worker.js';
import { emulateLinks } from './net-emulator.js';
import { EMULATE_ENV } from '../src/runtime/link-emulation.js';

export interface SweepOptions {
  rows: number; testRows: number; vocab: number; trainers: number[]; ks: number[]; rtts: number[]; bwMBs: number[];
  corrections: boolean[]; batchSize: number; embDim: number; shards: number;
  /** Passes over the whole grid (interleaved: rep is the outer loop); tables report medians. */
  reps: number;
  /** Emulate the cell's link between trainer ranks too (the dense all-reduce), not only to the servers. */
  rankLink: boolean;
  /** 'socket': rows always cross the proxy; 'auto': only in capped cells (elsewhere through shared memory). */
  rowsPath: 'auto' | 'socket';
}

export interface SweepCell {
  trainers: number; bwMBs: number; rttMs: number; k: number; correction: boolean; rep: number; rankLink: boolean;
  /** Whether the rows crossed the proxy (TCP) rather than shared memory. */
  rowsOverSocket?: boolean;
  samplesPerSec: number; auc: number; logLoss: number; steps: number; seconds: number; load: { before: number[]; after: number[] };
  /**
   * CPU milliseconds per training step, load-independent: rank 0's trainer over its training
   * loop, all servers over the same loop, and the whole job (every trainer and server process, reaped, plus this process's
   * proxies) from start to exit, evaluation and start-up included.
   */
  cpu: { trainerMsPerStep: number; serversMsPerStep: number; jobMsPerStep: number; jobSeconds: number };
  /** Rank 0's wall milliseconds per step waiting for embedding rows and in the dense all-reduce. */
  waits: { lookupMsPerStep: number; allReduceMsPerStep: number };
}

/** CPU seconds of this process's reaped children (cutime + cstime, /proc/self/stat), and of itself. */
function cpuNow(): { children: number; self: number } {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after the command: state is field 3; cutime and cstime are fields 16 and 17 (1-based).
  const ticks = Number(f[16 - 3]) + Number(f[17 - 3]);
  const u = process.cpuUsage();
  return { children: ticks / CLK_TCK, self: (u.user + u.system) / 1e6 };
}
// USER_HZ: 100 on every Linux ABI Node runs on.
const CLK_TCK = 100;

function list(v: string | undefined, def: number[]): number[] {
  if (v === undefined) return def;
  const xs = v.split(',').map(Number);
  if (xs.some((x) => !Number.isFinite(x) || x < 0)) throw new Error(`recsys-sweep-bench: bad list '${v}'`);
  return xs;
}

export function parseSweepArgs(argv: string[]): { o: SweepOptions; out: string | null } {
  const a = new Map<string, string>();
  let quick = false;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    if (k === '--quick') { quick = true; continue; }
    if (!k.startsWith('--') || argv[i + 1] === undefined) throw new Error(`recsys-sweep-bench: unexpected argument '${k}'`);
    a.set(k.slice(2), argv[++i]!);
  }
  const known = ['out', 'rows', 'test-rows', 'vocab', 'trainers', 'ks', 'rtts', 'bw', 'correction', 'batch', 'reps', 'rank-link', 'rows-path'];
  for (const k of a.keys()) if (!known.includes(k)) throw new Error(`recsys-sweep-bench: unknown option --${k}`);
  const corr = a.get('correction') ?? 'on';
  if (!['on', 'off', 'both'].includes(corr)) throw new Error(`recsys-sweep-bench: --correction must be on, off or both`);
  const rankLink = a.get('rank-link') ?? 'off';
  if (!['off', 'same'].includes(rankLink)) throw new Error(`recsys-sweep-bench: --rank-link must be off or same`);
  const rowsPath = a.get('rows-path') ?? 'auto';
  if (rowsPath !== 'auto' && rowsPath !== 'socket') throw new Error(`recsys-sweep-bench: --rows-path must be auto or socket`);
  const o: SweepOptions = {
    rows: list(a.get('rows'), [quick ? 60_000 : 1_000_000])[0]!,
    testRows: list(a.get('test-rows'), [quick ? 10_000 : 100_000])[0]!,
    vocab: list(a.get('vocab'), [quick ? 100_000 : 1_000_000])[0]!,
    trainers: list(a.get('trainers'), quick ? [2] : [2, 4]),
    ks: list(a.get('ks'), quick ? [0, 4] : [0, 1, 2, 4, 8]),
    rtts: list(a.get('rtts'), quick ? [0, 5] : [0, 1, 5, 20]),
    bwMBs: list(a.get('bw'), [0]),
    corrections: corr === 'both' ? [false, true] : [corr === 'on'],
    batchSize: list(a.get('batch'), [512])[0]!,
    embDim: 16,
    shards: 2,
    reps: Math.max(1, list(a.get('reps'), [1])[0]!),
    rankLink: rankLink === 'same',
    rowsPath,
  };
  return { o, out: a.get('out') ?? null };
}

export async function runRecsysSweep(o: SweepOptions, log: (s: string) => void = (s) => console.log(s)): Promise<{ groundTruthAUC: number; cells: SweepCell[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'recsys-sweep-'));
  try {
    const gen = { vocab: o.vocab, zipfS: 1.05, modelSeed: 1, pairFields: 0 };
    const t0 = performance.now();
    generateCriteo(join(dir, 'train.tsv'), { rows: o.rows, seed: 3, ...gen });
    const gt = generateCriteo(join(dir, 'test.tsv'), { rows: o.testRows, seed: 4, ...gen });
    log(`data: ${o.rows} train + ${o.testRows} test samples, vocab ${o.vocab} per field, generated in ${((performance.now() - t0) / 1000).toFixed(1)} s; hidden model AUC ${gt.groundTruthAUC.toFixed(4)}`);
    const cells: SweepCell[] = [];
    let n = 0;
    for (let rep = 0; rep < o.reps; rep++) for (const trainers of o.trainers) for (const bwMBs of o.bwMBs) for (const rttMs of o.rtts) for (const k of o.ks) for (const correction of o.corrections) {
      if (k === 0 && correction && o.corrections.length > 1) continue; // k = 0 has nothing to correct
      const work = join(dir, `run${n++}`);
      const rowsOverSocket = o.rowsPath === 'socket' || bwMBs > 0;
      const cfg = {
        workDir: work,
        data: { train: join(dir, 'train.tsv'), test: join(dir, 'test.tsv') },
        servers: { numShards: o.shards, wireDtype: 'bfloat16', optimizer: { kind: 'adagrad', lr: 0.05 }, init: { kind: 'uniform', scale: 0.05 }, capacity: 1 << 24 },
        model: { embDim: o.embDim, bottom: [64], top: [64], seed: 1 },
        train: { trainers, batchSize: o.batchSize, epochs: 1, staleness: k, stalenessCorrection: correction, dense: { kind: 'adamw', lr: 0.003 }, checkpointEvery: 0, logEvery: 1_000_000, ...(rowsOverSocket ? { sharedMemoryBytes: 0 } : {}) },
      };
      const path = join(dir, `run${n}.json`);
      writeFileSync(path, JSON.stringify(cfg));
      const before = loadavg();
      const cpu0 = cpuNow();
      const link = { rttMs, bandwidthBytesPerSec: bwMBs * 1e6 };
      // Trainer processes inherit the environment: with --rank-link same their mesh emulates the link too.
      const rankEmu = o.rankLink && (rttMs > 0 || bwMBs > 0);
      const saved = process.env[EMULATE_ENV];
      if (rankEmu) process.env[EMULATE_ENV] = `rtt=${rttMs},bw=${bwMBs * 1e6}`;
      let code: number;
      try {
        // Rows over the socket at 0 ms too go through the (zero-delay) proxy: TCP, as in the other cells.
        code = await recsysMain([path], rttMs > 0 || bwMBs > 0 || rowsOverSocket ? { trainerEndpoints: (eps) => emulateLinks(eps, link) } : {});
      } finally {
        if (saved === undefined) delete process.env[EMULATE_ENV]; else process.env[EMULATE_ENV] = saved;
      }
      if (code !== 0) throw new Error(`recsys-sweep-bench: trainers=${trainers} rtt=${rttMs} k=${k} exited ${code}`);
      const r = JSON.parse(readFileSync(join(work, 'result.json'), 'utf8')) as RecsysResult;
      const cpu1 = cpuNow();
      const jobSeconds = cpu1.children - cpu0.children + cpu1.self - cpu0.self;
      const cell: SweepCell = {
        trainers, bwMBs, rttMs, k, correction, rep, rankLink: rankEmu, rowsOverSocket, samplesPerSec: r.samplesPerSec, auc: r.auc, logLoss: r.logLoss, steps: r.steps, seconds: r.seconds,
        load: { before, after: loadavg() },
        waits: { lookupMsPerStep: (1000 * r.lookupWaitSeconds) / r.steps, allReduceMsPerStep: (1000 * r.allReduceSeconds) / r.steps },
        cpu: { trainerMsPerStep: (1000 * r.trainerCpuSeconds) / r.steps, serversMsPerStep: (1000 * r.serverCpuSeconds) / r.steps, jobMsPerStep: (1000 * jobSeconds) / r.steps, jobSeconds },
      };
      cells.push(cell);
      log(`  trainers ${trainers}  bw ${bwMBs || '-'} MB/s  rtt ${rttMs} ms  rows ${rowsOverSocket ? 'socket' : 'shm'}  k ${k}${correction ? '+corr' : ''}: ${r.samplesPerSec.toFixed(0)} samples/s  AUC ${r.auc.toFixed(4)}  (${r.seconds.toFixed(1)} s, ${((1000 * r.seconds) / r.steps).toFixed(1)} ms/step; CPU ms/step: trainer ${cell.cpu.trainerMsPerStep.toFixed(1)}, servers ${cell.cpu.serversMsPerStep.toFixed(1)}, job ${cell.cpu.jobMsPerStep.toFixed(1)}; waits ms/step: rows ${cell.waits.lookupMsPerStep.toFixed(1)}, all-reduce ${cell.waits.allReduceMsPerStep.toFixed(1)}; load ${before[0]!.toFixed(1)} -> ${cell.load.after[0]!.toFixed(1)})`);
      rmSync(work, { recursive: true, force: true });
    }
    return { groundTruthAUC: gt.groundTruthAUC, cells };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Cells saved before rowsOverSocket was recorded: rows crossed the proxy wherever there was one. */
const overSocket = (c: SweepCell): boolean => c.rowsOverSocket ?? (c.bwMBs > 0 || c.rttMs > 0);
const pathName = (c: SweepCell): string => (overSocket(c) ? 'socket' : 'shm');

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2; };

/** One row per configuration (medians over reps): speedup over k = 0 (same trainers, bandwidth, RTT) and AUC difference in points. */
export function summarize(cells: SweepCell[]): string[] {
  const key = (c: SweepCell): string => `${c.trainers}/${c.bwMBs}/${pathName(c)}/${c.rttMs}/${c.k}/${c.correction}`;
  const groups = new Map<string, SweepCell[]>();
  for (const c of cells) (groups.get(key(c)) ?? groups.set(key(c), []).get(key(c))!).push(c);
  const rows = [...groups.values()].map((g) => ({
    c: g[0]!, sps: median(g.map((x) => x.samplesPerSec)), auc: median(g.map((x) => x.auc)), lo: Math.min(...g.map((x) => x.samplesPerSec)), hi: Math.max(...g.map((x) => x.samplesPerSec)), n: g.length,
    trainerCpu: median(g.map((x) => x.cpu.trainerMsPerStep)), serversCpu: median(g.map((x) => x.cpu.serversMsPerStep)), jobCpu: median(g.map((x) => x.cpu.jobMsPerStep)),
    rowWait: median(g.map((x) => x.waits.lookupMsPerStep)), arWait: median(g.map((x) => x.waits.allReduceMsPerStep)),
  }));
  const lines: string[] = ['| trainers | bw MB/s | rows | RTT ms | k | correction | samples/s (median, min–max, reps) | speedup vs k=0 | AUC | ΔAUC vs k=0 (points) | CPU ms/step: trainer, servers, job | wait ms/step: rows, all-reduce |', '|---|---|---|---|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const c = r.c;
    const base = rows.find((b) => b.c.k === 0 && b.c.trainers === c.trainers && b.c.bwMBs === c.bwMBs && b.c.rttMs === c.rttMs && pathName(b.c) === pathName(c));
    const sp = base ? (r.sps / base.sps).toFixed(2) : '-';
    const d = base ? (100 * (r.auc - base.auc)).toFixed(2) : '-';
    lines.push(`| ${c.trainers} | ${c.bwMBs || 'uncapped'} | ${pathName(c)} | ${c.rttMs} | ${c.k} | ${c.k === 0 ? '-' : c.correction ? 'on' : 'off'} | ${r.sps.toFixed(0)} (${r.lo.toFixed(0)}–${r.hi.toFixed(0)}, ${r.n}) | ${sp} | ${r.auc.toFixed(4)} | ${d} | ${r.trainerCpu.toFixed(1)}, ${r.serversCpu.toFixed(1)}, ${r.jobCpu.toFixed(1)} | ${r.rowWait.toFixed(1)}, ${r.arWait.toFixed(1)} |`);
  }
  return lines;
}

/**
 * The speed-up surface, one block per (trainers, bandwidth cap): a row per RTT, a column per
 * k, each cell "speed-up over k = 0 of the same row (ΔAUC in points)", medians over reps.
 */
export function surface(cells: SweepCell[]): string[] {
  const med = new Map<string, { sps: number; auc: number }>();
  const key = (t: number, bw: number, p: string, rtt: number, k: number): string => `${t}/${bw}/${p}/${rtt}/${k}`;
  const keyOf = (c: SweepCell): string => key(c.trainers, c.bwMBs, pathName(c), c.rttMs, c.k);
  // One pass: the cells of each (trainers, cap, path, RTT, k), then their medians.
  const groups = new Map<string, SweepCell[]>();
  // With --correction both, the surface shows the first correction setting swept (k = 0 has none).
  const corr = cells.find((c) => c.k > 0)?.correction;
  for (const c of cells) {
    if (c.k > 0 && c.correction !== corr) continue;
    const k = keyOf(c);
    const g = groups.get(k);
    if (g) g.push(c); else groups.set(k, [c]);
  }
  for (const [k, g] of groups) med.set(k, { sps: median(g.map((x) => x.samplesPerSec)), auc: median(g.map((x) => x.auc)) });
  const num = (f: (c: SweepCell) => number): number[] => [...new Set(cells.map(f))].sort((a, b) => a - b);
  const ks = num((c) => c.k);
  const lines: string[] = [];
  for (const t of num((c) => c.trainers)) for (const bw of num((c) => c.bwMBs)) for (const p of [...new Set(cells.map(pathName))].sort()) {
    const rtts = num((c) => c.rttMs).filter((r) => ks.some((k) => med.has(key(t, bw, p, r, k))));
    if (rtts.length === 0) continue;
    lines.push('', `${t} trainers, ${bw ? `${bw} MB/s per direction per server` : 'uncapped'}, rows ${p === 'shm' ? 'through shared memory (requests cross the proxy)' : 'over TCP through the proxy'}: speed-up over k = 0 (ΔAUC, points); k = 0 in samples/s`, '',
      `| RTT | ${ks.map((k) => `k = ${k}`).join(' | ')} |`, `|---|${ks.map(() => '---:').join('|')}|`);
    for (const r of rtts) {
      const base = med.get(key(t, bw, p, r, 0));
      lines.push(`| ${r} ms | ${ks.map((k) => {
        const m = med.get(key(t, bw, p, r, k));
        if (!m) return '–';
        if (k === 0) return `${m.sps.toFixed(0)}`;
        if (!base) return `${m.sps.toFixed(0)} samples/s`;
        // Rounded before the sign is chosen: no "−0.00".
        const d = Math.round(10_000 * (m.auc - base.auc)) / 100;
        return `${(m.sps / base.sps).toFixed(2)}× (${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(2)})`;
      }).join(' | ')} |`);
    }
  }
  return lines;
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url && process.argv[2] === '--summarize') {
  // Re-print the tables from saved --out files (several runs of parts of the grid together).
  const cells = (process.argv[3] ?? '').split(',').flatMap((f) => (JSON.parse(readFileSync(f, 'utf8')) as { cells: SweepCell[] }).cells);
  for (const l of summarize(cells)) console.log(l);
  for (const l of surface(cells)) console.log(l);
} else if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const { o, out } = parseSweepArgs(process.argv.slice(2));
  const { machineInfo } = await import('./machine-info.js');
  const machine = await machineInfo(join(import.meta.dirname, '..', '..'));
  const flags = (readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:\s*(.*)$/m)?.[1] ?? '').split(' ').filter((f) => /^(avx2|fma|avx512f|avx512_bf16)$/.test(f));
  console.log(`machine: ${machine.cpuModel}, ${cpus().length} logical CPUs, flags ${flags.join(' ')}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const t0 = performance.now();
  const r = await runRecsysSweep(o);
  const seconds = (performance.now() - t0) / 1000;
  const lines = summarize(r.cells);
  console.log(`\nrecsys sweep (${seconds.toFixed(0)} s; hidden model AUC ${r.groundTruthAUC.toFixed(4)}; ${o.shards} servers, batch ${o.batchSize}/trainer, dim ${o.embDim}, adagrad; link between trainer ranks: ${o.rankLink ? 'emulated too' : 'not emulated'}; load after ${loadavg().map((x) => x.toFixed(2)).join(' ')}):`);
  for (const l of lines) console.log(l);
  for (const l of surface(r.cells)) console.log(l);
  if (out) { mkdirSync(dirname(out), { recursive: true }); writeFileSync(out, JSON.stringify({ options: o, machine, isaFlags: flags, seconds, ...r }, null, 1)); }
}
