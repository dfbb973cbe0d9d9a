// Memory per rank for each ZeRO stage: gpt-small with dp=2 through the launcher, a few
// steps each. Reports, per rank, the peak RSS (VmHWM of each rank process, read from
// /proc while it runs) and the data-parallel layer's measured per-rank state (the layout
// line: allocated weights, gradients, AdamW state, ZeRO-3 gather buffers, with the ZeRO
// formula beside them), plus tokens/s. Stages run interleaved over the repetitions;
// medians are reported with the machine and the load average before and after.
//
//   node dist/bench/zero-memory-bench.js [--quick] [--layers N] [--seq T] [--micro B] [--stages 0,3] [--reps R]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';

export interface ZeroMemoryRow { zero: number; layout: string; maxRssMB: number; rankPeakRssMB: number[]; tokensPerSec: number }

export interface ZeroMemoryOptions {
  steps?: number; layers?: number; seq?: number; micro?: number; stages?: number[]; reps?: number; log?: (s: string) => void;
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

async function runOnce(cli: string, data: string, zero: number, o: Required<Omit<ZeroMemoryOptions, 'log' | 'stages' | 'reps'>>): Promise<ZeroMemoryRow> {
  const out = mkdtempSync(join(tmpdir(), `athanor-zero${zero}-`));
  const child = spawn(process.execPath, [cli, 'launch', '--nproc-per-node', '2', '--', 'train', '--preset', 'gpt-small', `--data.dir=${data}`,
    `--model.nLayer=${o.layers}`, `--model.seqLen=${o.seq}`, `--train.microBatch=${o.micro}`,
    `--train.steps=${o.steps}`, '--train.evalEvery=0', '--train.checkpointEvery=0', '--train.threads=1', `--train.outDir=${out}`,
    '--parallel.dp=2', `--parallel.zero=${zero}`, '--train.evalBatches=1'], { env: { ...process.env, ATHANOR_QUIET: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  child.stdout.on('data', (c) => { text += c; });
  child.stderr.on('data', (c) => { text += c; });
  // VmHWM is the process's own high-water mark: the last reading before exit is its peak.
  const peaks = new Map<number, number>();
  const poll = setInterval(() => {
    for (const pid of descendants(child.pid!)) {
      let cmd = '';
      try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { continue; }
      if (!cmd.includes('train')) continue;
      const kb = peakRssKiB(pid);
      if (kb !== null) peaks.set(pid, Math.max(peaks.get(pid) ?? 0, kb));
    }
  }, 100);
  const code = await new Promise<number | null>((res) => child.on('close', res));
  clearInterval(poll);
  if (code !== 0) throw new Error(`ZeRO-${zero} run failed:\n${text.slice(-2000)}`);
  const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const cfg = recs.find((x) => x.kind === 'config')!, sum = recs.find((x) => x.kind === 'summary')!;
  const steps = recs.filter((x) => x.kind === 'step' && (x.step as number) > 1).map((x) => x.tokensPerSec as number).sort((a, b) => a - b);
  // The rank processes are the largest descendants (the launcher itself also matches 'train').
  const rankPeak = [...peaks.values()].sort((a, b) => b - a).slice(0, 2).map((k) => k / 1024);
  return { zero, layout: String(cfg.layout), maxRssMB: sum.maxRssMB as number, rankPeakRssMB: rankPeak, tokensPerSec: steps[Math.floor(steps.length / 2)] ?? 0 };
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? 0; };

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
  const run = { steps: o.steps ?? 4, layers: o.layers ?? 4, seq: o.seq ?? 256, micro: o.micro ?? 4 };
  const stages = o.stages ?? [0, 1, 2, 3];
  log(`machine: ${cpus()[0]?.model ?? '?'} × ${cpus().length}; gpt-small, ${run.layers} layers, seq ${run.seq}, micro-batch ${run.micro}, dp=2, ${run.steps} steps, ${o.reps ?? 1} rep(s); load before ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const all = new Map<number, ZeroMemoryRow[]>();
  for (let rep = 0; rep < (o.reps ?? 1); rep++) {
    for (const zero of stages) {
      const row = await runOnce(cli, data, zero, run);
      all.set(zero, [...(all.get(zero) ?? []), row]);
    }
  }
  const rows: ZeroMemoryRow[] = [];
  for (const zero of stages) {
    const rs = all.get(zero)!;
    const row: ZeroMemoryRow = {
      zero, layout: rs[0]!.layout, maxRssMB: median(rs.map((r) => r.maxRssMB)),
      rankPeakRssMB: [0, 1].map((i) => median(rs.map((r) => r.rankPeakRssMB[i] ?? 0))), tokensPerSec: median(rs.map((r) => r.tokensPerSec)),
    };
    rows.push(row);
    log(`ZeRO-${zero}: peak RSS per rank ${row.rankPeakRssMB.map((m) => `${m.toFixed(0)} MiB`).join(', ')} (rank 0 self-reported ${row.maxRssMB.toFixed(0)} MiB); ` +
      `${row.tokensPerSec.toFixed(0)} tokens/s; ${row.layout.replace(/^.*per-rank state/, 'per-rank state')}`);
  }
  log(`load after ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  return rows;
}

if (process.argv[1] && /zero-memory-bench\.js$/.test(process.argv[1])) {
  const arg = (n: string) => { const i = process.argv.indexOf(n); return i > 0 ? process.argv[i + 1] : undefined; };
  const quick = process.argv.includes('--quick');
  runZeroMemoryBench({
    layers: Number(arg('--layers') ?? 8), seq: Number(arg('--seq') ?? 64), micro: Number(arg('--micro') ?? 1),
    stages: (arg('--stages') ?? '0,3').split(',').map(Number), reps: Number(arg('--reps') ?? (quick ? 1 : 3)), steps: quick ? 3 : 4,
  }).catch((e: unknown) => { console.error(e); process.exit(1); });
}
