// Memory per rank for each ZeRO stage: gpt-small with dp=2 through the launcher,
// a few steps each; reports the per-rank persistent state the runtime accounts for
// (weights, gradients, AdamW moments) and rank 0's peak RSS, plus tokens/s.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';

export interface ZeroMemoryRow { zero: number; layout: string; maxRssMB: number; tokensPerSec: number }

export async function runZeroMemoryBench(o: { steps?: number; log?: (s: string) => void } = {}): Promise<ZeroMemoryRow[]> {
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
  const rows: ZeroMemoryRow[] = [];
  for (const zero of [0, 1, 2, 3]) {
    const out = mkdtempSync(join(tmpdir(), `athanor-zero${zero}-`));
    const r = spawnSync(process.execPath, [cli, 'launch', '--nproc-per-node', '2', '--', 'train', '--preset', 'gpt-small', `--data.dir=${data}`,
      `--train.steps=${o.steps ?? 4}`, '--train.evalEvery=0', '--train.checkpointEvery=0', '--train.threads=1', `--train.outDir=${out}`,
      '--parallel.dp=2', `--parallel.zero=${zero}`, '--train.microBatch=4', '--train.evalBatches=1'], { encoding: 'utf8', env: { ...process.env, ATHANOR_QUIET: '1' } });
    if (r.status !== 0) throw new Error(`ZeRO-${zero} run failed:\n${(r.stdout + r.stderr).slice(-2000)}`);
    const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const cfg = recs.find((x) => x.kind === 'config')!, sum = recs.find((x) => x.kind === 'summary')!;
    const steps = recs.filter((x) => x.kind === 'step' && (x.step as number) > 1).map((x) => x.tokensPerSec as number).sort((a, b) => a - b);
    const row = { zero, layout: String(cfg.layout), maxRssMB: sum.maxRssMB as number, tokensPerSec: steps[Math.floor(steps.length / 2)] ?? 0 };
    rows.push(row);
    log(`ZeRO-${zero}: ${row.layout.replace(/^.*per-rank state: /, '')}; rank-0 peak RSS ${row.maxRssMB.toFixed(0)} MiB; ${row.tokensPerSec.toFixed(0)} tokens/s`);
  }
  return rows;
}

if (process.argv[1] && /zero-memory-bench\.js$/.test(process.argv[1])) {
  runZeroMemoryBench().catch((e: unknown) => { console.error(e); process.exit(1); });
}
