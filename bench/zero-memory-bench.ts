// Memory per rank for each ZeRO stage and HSDP: gpt-small (8 layers, seq 64, micro-batch
// 1 by default: parameters dominate) through the launcher, a few steps each, at dp=2
// (ZeRO-0/1/2/3), dp=4 (ZeRO-0, ZeRO-3, HSDP with 2 shard groups of 2; ZeRO-1/2 too
// without --quick) and one process (dp=1), so ZeRO-3's per-rank memory can be read at
// dp = 1, 2, 4. Reports, per run: every rank's peak RSS (VmHWM of each rank process, read
// from /proc while it runs), rank 0's measured peak of array-buffer bytes (the trainer's
// summary: every ArrayBuffer and SharedArrayBuffer alive; the ZeRO ranks hold equal
// shards), the data-parallel layer's accounting line, tokens/s, and the ZeRO-3 model of
// per-rank state beside it: 16 P / dp + 16 U + 4 O bytes (weights, gradients and AdamW for
// the shard, two gather and two staging buffers of the largest unit U, the outer unit O).
// Configurations run interleaved over the repetitions; medians are reported with the
// machine and the load average before and after.
//
//   node dist/bench/zero-memory-bench.js [--quick] [--layers N] [--seq T] [--micro B] [--reps R]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';
import { GPT } from '../src/nn/gpt.js';
import { presetConfig } from '../src/train/config.js';

export interface ZeroMemoryCase { dp: number; zero: 0 | 1 | 2 | 3; shardGroup?: number }

export interface ZeroMemoryRow {
  label: string; dp: number; zero: number; shardGroup: number; layout: string;
  /** Rank 0's own maxRSS and measured peak array-buffer bytes (trainer summary), MiB. */
  maxRssMB: number; peakArrayBuffersMB: number;
  /** Every rank's peak RSS (VmHWM), MiB, largest first. */
  rankPeakRssMB: number[];
  tokensPerSec: number;
  /** ZeRO-3 / HSDP: the per-rank state the sharding model predicts (16 P / shard + 16 U + 4 O bytes), MiB. */
  modelStateMB: number | null;
}

export interface ZeroMemoryOptions {
  steps?: number; layers?: number; seq?: number; micro?: number; cases?: ZeroMemoryCase[]; reps?: number; log?: (s: string) => void;
}

export const labelOf = (c: ZeroMemoryCase): string =>
  c.dp === 1 ? 'dp=1 (one process)' : c.shardGroup ? `dp=${c.dp} HSDP ${c.shardGroup}×${c.dp / c.shardGroup}` : `dp=${c.dp} ZeRO-${c.zero}`;

/** dp=2 every stage, dp=4 ZeRO-0/3 and HSDP 2×2 (plus ZeRO-1/2 unless quick), and one process. */
export function defaultCases(quick: boolean): ZeroMemoryCase[] {
  return [
    { dp: 1, zero: 0 },
    { dp: 2, zero: 0 }, { dp: 2, zero: 1 }, { dp: 2, zero: 2 }, { dp: 2, zero: 3 },
    { dp: 4, zero: 0 }, ...(quick ? [] : [{ dp: 4, zero: 1 as const }, { dp: 4, zero: 2 as const }]), { dp: 4, zero: 3 }, { dp: 4, zero: 3, shardGroup: 2 },
  ];
}

/** Every descendant of `root` (by the parent field of /proc/PID/stat). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* exited */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const [c, pp] of parent) if (pp === p) { out.push(c); walk(c); } };
  walk(root);
  return out;
}

function peakRssKiB(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch { return null; }
}

/** Parameters, largest ZeRO-3 unit (a block, or the untied V × C embedding / head) and the outer unit, from the model on the meta device. */
function unitSizes(layers: number, seq: number): { P: number; U: number; O: number } {
  const m = presetConfig('gpt-small').model;
  const meta = new GPT({ ...m, nLayer: layers, seqLen: seq }, { device: 'meta' });
  const units = new Map<string, number>();
  for (const [n, p] of meta.namedParameters()) {
    const key = /^h\.\d+\./.exec(n)?.[0] ?? (!m.tieEmbeddings && (n === 'wte.weight' || n === 'lm_head.weight') ? n : 'outer');
    units.set(key, (units.get(key) ?? 0) + p.size);
  }
  const P = [...units.values()].reduce((a, b) => a + b, 0);
  return { P, U: Math.max(...[...units].filter(([k]) => k !== 'outer').map(([, v]) => v)), O: units.get('outer') ?? 0 };
}

async function runOnce(cli: string, data: string, c: ZeroMemoryCase, o: { steps: number; layers: number; seq: number; micro: number }): Promise<Omit<ZeroMemoryRow, 'modelStateMB'>> {
  const out = mkdtempSync(join(tmpdir(), `athanor-zero${c.zero}-`));
  const train = ['train', '--preset', 'gpt-small', `--data.dir=${data}`,
    `--model.nLayer=${o.layers}`, `--model.seqLen=${o.seq}`, `--train.microBatch=${o.micro}`,
    `--train.steps=${o.steps}`, '--train.evalEvery=0', '--train.checkpointEvery=0', '--train.threads=1', `--train.outDir=${out}`,
    `--parallel.dp=${c.dp}`, `--parallel.zero=${c.zero}`, `--parallel.shardGroup=${c.shardGroup ?? 0}`, '--train.evalBatches=1'];
  const args = c.dp === 1 ? train : ['launch', '--nproc-per-node', String(c.dp), '--', ...train];
  const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ATHANOR_QUIET: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.on('data', (d) => { text += d; });
  child.stderr.on('data', (d) => { text += d; });
  // VmHWM is the process's own high-water mark: the last reading before exit is its peak.
  const peaks = new Map<number, number>();
  const poll = setInterval(() => {
    const pids = c.dp === 1 ? [child.pid!] : descendants(child.pid!);
    for (const pid of pids) {
      let cmd = '';
      try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { continue; }
      if (!cmd.includes('train')) continue;
      const kb = peakRssKiB(pid);
      if (kb !== null) peaks.set(pid, Math.max(peaks.get(pid) ?? 0, kb));
    }
  }, 100);
  const code = await new Promise<number | null>((res) => child.on('close', res));
  clearInterval(poll);
  if (code !== 0) throw new Error(`${labelOf(c)} run failed:\n${text.slice(-2000)}`);
  const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const cfg = recs.find((x) => x.kind === 'config')!, sum = recs.find((x) => x.kind === 'summary')!;
  const steps = recs.filter((x) => x.kind === 'step' && (x.step as number) > 1).map((x) => x.tokensPerSec as number).sort((a, b) => a - b);
  // The rank processes are the largest descendants (the launcher itself also matches 'train').
  const rankPeak = [...peaks.values()].sort((a, b) => b - a).slice(0, c.dp).map((k) => k / 1024);
  return {
    label: labelOf(c), dp: c.dp, zero: c.zero, shardGroup: c.shardGroup ?? 0, layout: String(cfg.layout ?? 'one process'),
    maxRssMB: sum.maxRssMB as number, peakArrayBuffersMB: sum.peakArrayBuffersMB as number, rankPeakRssMB: rankPeak,
    tokensPerSec: steps[Math.floor(steps.length / 2)] ?? 0,
  };
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? 0; };

function machine(): string {
  let flags = '';
  try {
    const f = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim().split(/\s+/) ?? [];
    flags = ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16'].filter((x) => f.includes(x)).join(' ');
  } catch { /* not Linux */ }
  return `${cpus()[0]?.model ?? '?'} × ${cpus().length} (${flags || 'flags unknown'})`;
}

export async function runZeroMemoryBench(o: ZeroMemoryOptions = {}): Promise<ZeroMemoryRow[]> {
  const log = o.log ?? console.log;
  const data = mkdtempSync(join(tmpdir(), 'athanor-zero-'));
  const rng = new Rng(3);
  for (const [split, n] of [['train', 200_000], ['val', 20_000]] as const) {
    const w = new IndexedDatasetWriter(join(data, split), { dtype: 'uint16' });
    const doc = new Uint16Array(1000);
    for (let i = 0; i < n; i += 1000) { for (let j = 0; j < 1000; j++) doc[j] = rng.int(8192); w.addDocument(doc); }
    w.finish();
  }
  writeFileSync(join(data, 'meta.json'), JSON.stringify({ tokenizer: { vocabSize: 8192 } }));
  const cli = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
  const run = { steps: o.steps ?? 4, layers: o.layers ?? 8, seq: o.seq ?? 64, micro: o.micro ?? 1 };
  const cases = o.cases ?? defaultCases(false);
  const { P, U, O } = unitSizes(run.layers, run.seq);
  const mib = (b: number) => b / 2 ** 20;
  log(`machine: ${machine()}; gpt-small, ${run.layers} layers (${P.toLocaleString('en-US')} parameters, largest unit ${U.toLocaleString('en-US')}, outer ${O.toLocaleString('en-US')}), ` +
    `seq ${run.seq}, micro-batch ${run.micro}, ${run.steps} steps, ${o.reps ?? 1} rep(s); load before ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const all = new Map<string, Omit<ZeroMemoryRow, 'modelStateMB'>[]>();
  for (let rep = 0; rep < (o.reps ?? 1); rep++) {
    for (const c of cases) {
      const row = await runOnce(cli, data, c, run);
      all.set(row.label, [...(all.get(row.label) ?? []), row]);
    }
  }
  const rows: ZeroMemoryRow[] = [];
  for (const c of cases) {
    const rs = all.get(labelOf(c))!;
    const shard = c.zero === 3 ? (c.shardGroup || c.dp) : 0;
    const row: ZeroMemoryRow = {
      ...rs[0]!, maxRssMB: median(rs.map((r) => r.maxRssMB)), peakArrayBuffersMB: median(rs.map((r) => r.peakArrayBuffersMB)),
      rankPeakRssMB: rs[0]!.rankPeakRssMB.map((_, i) => median(rs.map((r) => r.rankPeakRssMB[i] ?? 0))), tokensPerSec: median(rs.map((r) => r.tokensPerSec)),
      modelStateMB: shard > 1 ? mib(16 * P / shard + 16 * U + 4 * O) : null,
    };
    rows.push(row);
    log(`${row.label}: peak array buffers (rank 0) ${row.peakArrayBuffersMB.toFixed(0)} MiB` +
      `${row.modelStateMB !== null ? ` (ZeRO-3 state model ${row.modelStateMB.toFixed(0)} MiB = 16P/${shard} + 16U + 4O)` : ''}; ` +
      `peak RSS per rank ${row.rankPeakRssMB.map((m) => `${m.toFixed(0)}`).join(', ')} MiB; ${row.tokensPerSec.toFixed(0)} tokens/s; ` +
      `${row.layout.replace(/^.*per-rank state/, 'per-rank state')}`);
  }
  log(`(16 P = ${mib(16 * P).toFixed(0)} MiB: weights, gradients and AdamW moments of the whole model, float32)`);
  log(`load after ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  return rows;
}

if (process.argv[1] && /zero-memory-bench\.js$/.test(process.argv[1])) {
  const arg = (n: string) => { const i = process.argv.indexOf(n); return i > 0 ? process.argv[i + 1] : undefined; };
  const quick = process.argv.includes('--quick');
  runZeroMemoryBench({
    layers: Number(arg('--layers') ?? 8), seq: Number(arg('--seq') ?? 64), micro: Number(arg('--micro') ?? 1),
    cases: defaultCases(quick), reps: Number(arg('--reps') ?? (quick ? 1 : 3)), steps: quick ? 3 : 4,
  }).catch((e: unknown) => { console.error(e); process.exit(1); });
}
