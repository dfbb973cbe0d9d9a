// Pipeline parallelism on this machine: gpt-small (or gpt-tiny with --quick) trained by
// two ranks × 1 thread through `athanor launch`, as dp=2 and as pp=2 with each schedule,
// at the same global batch (8 sequences per step). Reports median tokens/s per layout and,
// for the pipelines, the measured bubble (mean over ranks of 1 − compute time / step
// time, from metrics.jsonl) beside the theory (p−1)/(v·m+p−1). Layouts run interleaved in
// every rep; the machine (CPU model, ISA flags) and the load average before and after are
// printed and returned.
//
//   node dist/bench/pipeline-bench.js [--quick] [--reps N] [--steps N]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';

export interface PipelineBenchRow {
  layout: string;
  tokensPerSec: number;
  perRep: number[];
  bubble: number | null;
  bubbleTheory: number | null;
}

interface Layout { name: string; args: string[] }

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function syntheticData(dir: string, vocab: number): void {
  const rng = new Rng(11);
  for (const [split, n] of [['train', 300_000], ['val', 30_000]] as const) {
    const w = new IndexedDatasetWriter(join(dir, split), { dtype: 'uint16' });
    const doc = new Uint16Array(1000);
    for (let i = 0; i < n; i += doc.length) {
      for (let j = 0; j < doc.length; j++) doc[j] = rng.int(vocab);
      w.addDocument(doc);
    }
    w.finish();
  }
  writeFileSync(join(dir, 'meta.json'), JSON.stringify({ tokenizer: { vocabSize: vocab } }));
}

function isaFlags(): string {
  try {
    const flags = new Set((/^flags\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(/\s+/));
    return ['avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_bf16'].map((f) => `${f}${flags.has(f) ? '+' : '-'}`).join(' ');
  } catch { return 'unknown'; }
}

function runLayout(data: string, preset: string, l: Layout, steps: number, warmup: number): { tps: number; bubble: number | null; theory: number | null } {
  const out = mkdtempSync(join(tmpdir(), 'athanor-ppbench-'));
  const cli = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
  const args = ['--preset', preset, `--data.dir=${data}`, `--train.steps=${steps}`, '--train.evalEvery=0', '--train.checkpointEvery=0', '--train.evalBatches=1',
    '--train.threads=1', `--train.outDir=${out}`, ...l.args];
  try {
    const r = spawnSync(process.execPath, [cli, 'launch', '--nproc-per-node', '2', '--', 'train', ...args], { encoding: 'utf8', env: { ...process.env, ATHANOR_QUIET: '1' } });
    if (r.status !== 0) throw new Error(`${l.name} failed:\n${(r.stdout + r.stderr).slice(-2000)}`);
    const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((x) => JSON.parse(x) as { kind: string; step: number; tokensPerSec: number; bubble?: number; bubbleTheory?: number });
    const st = recs.filter((x) => x.kind === 'step' && x.step > warmup);
    const b = st.filter((x) => typeof x.bubble === 'number');
    return { tps: median(st.map((x) => x.tokensPerSec)), bubble: b.length ? median(b.map((x) => x.bubble!)) : null, theory: b[0]?.bubbleTheory ?? null };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

export function runPipelineBench(o: { quick?: boolean; reps?: number; steps?: number; log?: (s: string) => void } = {}): PipelineBenchRow[] {
  const quick = o.quick ?? false;
  const log = o.log ?? console.log;
  const preset = quick ? 'gpt-tiny' : 'gpt-small';
  const vocab = quick ? 2048 : 8192;
  const reps = o.reps ?? (quick ? 1 : 3), steps = o.steps ?? (quick ? 6 : 8), warmup = 2;
  // Global batch 8 sequences per step everywhere; the pipelines split it into m = 4
  // micro-batches of 2 (m = 4 ≥ pp for 1F1B, a multiple of pp for interleaving).
  const layouts: Layout[] = [
    { name: 'dp=2 (micro-batch 4)', args: ['--parallel.dp=2', '--train.microBatch=4'] },
    ...(['gpipe', '1f1b', 'interleaved'] as const).map((s) => ({
      name: `pp=2 ${s}${s === 'interleaved' ? ' × 2 chunks' : ''} (m=4 × 2)`,
      args: ['--parallel.pp=2', '--train.microBatch=2', '--train.gradAccum=4', `--parallel.pipelineSchedule=${s}`, '--parallel.pipelineChunks=2'],
    })),
  ];
  const cpu = cpus()[0]?.model ?? 'unknown';
  const loadBefore = loadavg();
  log(`pipeline bench: ${preset}, 2 ranks × 1 thread, ${steps} steps (first ${warmup} not counted), ${reps} interleaved rep(s)`);
  log(`machine: ${cpu}, ${cpus().length} logical CPUs, ${isaFlags()}; load average before ${loadBefore.map((x) => x.toFixed(2)).join(' / ')}`);
  const data = mkdtempSync(join(tmpdir(), 'athanor-ppbench-data-'));
  syntheticData(data, vocab);
  const res = new Map<string, { tps: number[]; bubble: number[]; theory: number | null }>();
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const l of layouts) {
        const r = runLayout(data, preset, l, steps, warmup);
        const e = res.get(l.name) ?? { tps: [], bubble: [], theory: r.theory };
        e.tps.push(r.tps);
        if (r.bubble !== null) e.bubble.push(r.bubble);
        res.set(l.name, e);
        log(`  rep ${rep + 1}: ${l.name}: ${r.tps.toFixed(0)} tokens/s${r.bubble !== null ? `, bubble ${(100 * r.bubble).toFixed(1)}% (theory ${(100 * r.theory!).toFixed(1)}%)` : ''}`);
      }
    }
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
  const loadAfter = loadavg();
  const rows: PipelineBenchRow[] = layouts.map((l) => {
    const e = res.get(l.name)!;
    return { layout: l.name, tokensPerSec: median(e.tps), perRep: e.tps, bubble: e.bubble.length ? median(e.bubble) : null, bubbleTheory: e.theory };
  });
  const dp = rows[0]!.tokensPerSec;
  log(`\n${preset}, global batch 8 × T, median tokens/s (ratio to dp=2) and bubble (measured vs theory):`);
  for (const r of rows) {
    log(`  ${r.layout.padEnd(40)} ${r.tokensPerSec.toFixed(0).padStart(7)} tokens/s  ${(r.tokensPerSec / dp).toFixed(2)}x` +
      (r.bubble !== null ? `  bubble ${(100 * r.bubble).toFixed(1)}% vs ${(100 * r.bubbleTheory!).toFixed(1)}%` : ''));
  }
  log(`load average after ${loadAfter.map((x) => x.toFixed(2)).join(' / ')}`);
  return rows;
}

if (process.argv[1] && /pipeline-bench\.js$/.test(process.argv[1])) {
  const argv = process.argv.slice(2);
  const num = (f: string): number | undefined => { const i = argv.indexOf(f); return i >= 0 ? Number(argv[i + 1]) : undefined; };
  runPipelineBench({ quick: argv.includes('--quick'), reps: num('--reps'), steps: num('--steps') });
}
