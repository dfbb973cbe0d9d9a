// Accuracy against the PyTorch reference: the demo configuration (gpt-tiny on the
// bundled corpus, same prepared data, hyperparameters and schedule) trained by Athanor
// and by tools/train-ref.py; prints both validation curves and the final ratio
// (goal: within 2%).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { presetConfig } from '../src/train/config.js';
import { PYTHON } from './machine-info.js';

export interface AccuracyResult {
  athanor: { step: number; valLoss: number }[];
  torch: { step: number; valLoss: number }[];
  finalRatio: number | null;
}

export async function runAccuracyBench(o: { log?: (s: string) => void; steps?: number } = {}): Promise<AccuracyResult> {
  const log = o.log ?? console.log;
  const root = projectRoot();
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  const work = mkdtempSync(join(tmpdir(), 'athanor-acc-'));
  const data = join(work, 'data');
  const corpus = join(root, 'data', 'demo', 'corpus.txt');
  let r = spawnSync(process.execPath, [cli, 'prepare', corpus, '--out', data, '--vocab-size', '2048', '--val-fraction', '0.02'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stdout + r.stderr);
  const cfg = presetConfig('gpt-tiny');
  const steps = o.steps ?? cfg.train.steps;
  const out = join(work, 'athanor');
  r = spawnSync(process.execPath, [cli, 'train', '--preset', 'gpt-tiny', `--data.dir=${data}`, `--train.outDir=${out}`, `--train.steps=${steps}`, '--train.threads=2'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stdout + r.stderr);
  const athanor = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; step: number; valLoss: number })
    .filter((x) => x.kind === 'eval').map((x) => ({ step: x.step, valLoss: x.valLoss }));
  let torch: { step: number; valLoss: number }[] = [];
  const py = PYTHON;
  if (existsSync(py)) {
    const m = cfg.model, t = cfg.train, op = cfg.optim;
    const jsonl = join(work, 'torch.jsonl');
    r = spawnSync(py, [join(root, 'tools', 'train-ref.py'), '--data-dir', data, '--n-layer', String(m.nLayer), '--n-head', String(m.nHead), '--d-model', String(m.dModel),
      '--d-ff', String(m.dFF), '--vocab', String(m.vocabSize), '--seq', String(m.seqLen), '--batch', String(t.microBatch), '--steps', String(steps), '--lr', String(op.lr),
      '--warmup', String(op.warmupSteps), '--min-lr', String(op.minLr), '--weight-decay', String(op.weightDecay), '--grad-clip', String(op.gradClip),
      '--eval-every', String(t.evalEvery), '--eval-batches', String(t.evalBatches), '--threads', '2', '--seed', '0', '--out-jsonl', jsonl], { encoding: 'utf8' });
    if (r.status === 0) {
      torch = readFileSync(jsonl, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step?: number; val_loss?: number })
        .filter((x) => x.val_loss !== undefined && x.step !== undefined).map((x) => ({ step: x.step! + 1, valLoss: x.val_loss! })); // its steps are 0-based
    } else log(`PyTorch reference failed: ${(r.stderr || r.stdout).slice(-1500)}`);
  } else log('PyTorch (Debian python3-torch at /usr/bin/python3) not available: Athanor curve only');
  log('\nvalidation loss, gpt-tiny on data/demo/corpus.txt (same data, config, schedule):');
  log('  step  athanor  pytorch');
  const steps2 = [...new Set([...athanor.map((x) => x.step), ...torch.map((x) => x.step)])].sort((a, b) => a - b);
  for (const s of steps2) {
    const a = athanor.find((x) => x.step === s), p = torch.find((x) => x.step === s);
    log(`  ${String(s).padStart(4)}  ${a ? a.valLoss.toFixed(4) : '   -   '}  ${p ? p.valLoss.toFixed(4) : '   -   '}`);
  }
  const fa = athanor.at(-1), fp = torch.at(-1);
  const finalRatio = fa && fp ? fa.valLoss / fp.valLoss : null;
  if (finalRatio !== null) log(`final: athanor ${fa!.valLoss.toFixed(4)} vs pytorch ${fp!.valLoss.toFixed(4)}: ratio ${finalRatio.toFixed(4)} (${(100 * Math.abs(finalRatio - 1)).toFixed(2)}% apart; goal ≤ 2%)`);
  return { athanor, torch, finalRatio };
}

if (process.argv[1] && /accuracy-bench\.js$/.test(process.argv[1])) {
  runAccuracyBench().catch((e: unknown) => { console.error(e); process.exit(1); });
}
