// gpt-small training throughput, like against like: Athanor 1 rank × 2 threads against
// PyTorch in one process with 2 threads, and Athanor 2 ranks × 1 thread (the launcher,
// dp=2) against PyTorch DistributedDataParallel over gloo with 2 processes × 1 thread
// (bench/peers/torch-gpt.py --ddp 2). Same model, global batch 8 × 256 tokens, AdamW
// with clipping 1.0, all four interleaved in every rep of one invocation. Reports
// medians of per-step tokens/s after warm-up.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';
import { PYTHON } from './machine-info.js';

export interface GptTrainBenchRow {
  config: string;
  /** The PyTorch row this one is compared with (absent on PyTorch rows). */
  peer?: string;
  tokensPerSec: number;
  perRun: number[];
  mfu?: number;
}

const PY = PYTHON;

export function syntheticData(dir: string, vocab = 8192): void {
  const rng = new Rng(7);
  for (const [split, n] of [['train', 400_000], ['val', 40_000]] as const) {
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

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export function athanor(dataDir: string, ranks: number, threads: number, steps: number, warmup: number, extra: string[] = [], preset = 'gpt-small'): { tps: number; mfu: number; maxRssMB?: number } {
  const out = mkdtempSync(join(tmpdir(), 'athanor-gptbench-'));
  const cli = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
  const args = ['--preset', preset, `--data.dir=${dataDir}`, `--train.steps=${steps}`, '--train.evalEvery=0', '--train.checkpointEvery=0',
    `--train.threads=${threads}`, `--train.outDir=${out}`, `--parallel.dp=${ranks}`, `--train.microBatch=${8 / ranks}`, '--train.evalBatches=1', ...extra];
  const cmd = ranks === 1 ? [cli, 'train', ...args] : [cli, 'launch', '--nproc-per-node', String(ranks), '--', 'train', ...args];
  try {
    const r = spawnSync(process.execPath, cmd, { encoding: 'utf8', env: { ...process.env, ATHANOR_QUIET: '1' } });
    if (r.status !== 0) throw new Error(`athanor ${ranks}x${threads} failed:\n${(r.stdout + r.stderr).slice(-2000)}`);
    const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; step: number; tokensPerSec: number; mfu: number; maxRssMB?: number });
    const st = recs.filter((x) => x.kind === 'step' && x.step > warmup);
    return { tps: median(st.map((x) => x.tokensPerSec)), mfu: median(st.map((x) => x.mfu)), maxRssMB: recs.find((x) => x.kind === 'summary')?.maxRssMB };
  } finally {
    rmSync(out, { recursive: true, force: true }); // the run's final checkpoint is 0.25-0.4 GB
  }
}

function torch(threads: number, steps: number, warmup: number, ddp = 0, log?: (s: string) => void): number | null {
  if (!existsSync(PY)) return null;
  const r = spawnSync(PY, [join(projectRoot(), 'bench', 'peers', 'torch-gpt.py'), '--threads', String(threads), '--steps', String(steps - warmup), '--warmup-steps', String(warmup), '--grad-clip', '1.0',
    ...(ddp ? ['--ddp', String(ddp)] : [])], { encoding: 'utf8' });
  if (r.status !== 0) {
    log?.(`  torch-gpt.py${ddp ? ` --ddp ${ddp}` : ''} failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
    return null;
  }
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  return line ? (JSON.parse(line) as { tokens_per_s: number }).tokens_per_s : null;
}

export async function runGptTrainBench(opts: { reps?: number; steps?: number; warmup?: number; log?: (s: string) => void } = {}): Promise<GptTrainBenchRow[]> {
  const reps = opts.reps ?? 3, steps = opts.steps ?? 8, warmup = opts.warmup ?? 2;
  const log = opts.log ?? console.log;
  const data = mkdtempSync(join(tmpdir(), 'athanor-gptdata-'));
  syntheticData(data);
  const TORCH1 = 'pytorch 1.13, 1 process x 2 threads', DDP = 'pytorch 1.13 DDP (gloo), 2 processes x 1 thread';
  const runs: Record<string, number[]> = { 'athanor 1 rank x 2 threads': [], 'athanor 2 ranks x 1 thread (dp=2)': [], [TORCH1]: [], [DDP]: [] };
  const peerOf: Record<string, string> = { 'athanor 1 rank x 2 threads': TORCH1, 'athanor 2 ranks x 1 thread (dp=2)': DDP };
  const mfus: Record<string, number[]> = {};
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const [name, ranks, threads] of [['athanor 1 rank x 2 threads', 1, 2], ['athanor 2 ranks x 1 thread (dp=2)', 2, 1]] as const) {
        const r = athanor(data, ranks, threads, steps, warmup);
        runs[name]!.push(r.tps);
        (mfus[name] ??= []).push(r.mfu);
        log(`  rep ${rep + 1}: ${name}: ${r.tps.toFixed(0)} tokens/s`);
      }
      for (const [name, threads, ddp] of [[TORCH1, 2, 0], [DDP, 1, 2]] as const) {
        const t = torch(threads, steps, warmup, ddp, log);
        if (t !== null) { runs[name]!.push(t); log(`  rep ${rep + 1}: ${name}: ${t.toFixed(0)} tokens/s`); }
        else if (rep === 0) log(`  ${name}: not available (Debian python3-torch at /usr/bin/python3): no peer number`);
      }
    }
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
  const rows: GptTrainBenchRow[] = Object.entries(runs).filter(([, v]) => v.length).map(([config, v]) => ({ config, peer: peerOf[config], tokensPerSec: median(v), perRun: v, mfu: mfus[config] ? median(mfus[config]!) : undefined }));
  log('\ngpt-small training (B8 T256, 21,130,240 params), median tokens/s over interleaved reps:');
  for (const r of rows) {
    const p = rows.find((x) => x.config === r.peer);
    log(`  ${r.config.padEnd(48)} ${r.tokensPerSec.toFixed(0).padStart(6)} tokens/s${r.mfu !== undefined ? `  MFU ${(100 * r.mfu).toFixed(0)}% of measured GEMM ceiling` : ''}${p ? `  ratio vs ${p.config}: ${(r.tokensPerSec / p.tokensPerSec).toFixed(2)}x` : ''}`);
  }
  return rows;
}

if (process.argv[1] && /gpt-train-bench\.js$/.test(process.argv[1])) {
  runGptTrainBench({ reps: Number(process.argv[2] ?? 3) }).catch((e: unknown) => { console.error(e); process.exit(1); });
}
