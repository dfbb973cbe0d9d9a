// Quality check of issue 9 on the bundled demo corpus: at an equal number of steps,
// moe-tiny (8 experts, top-2, expert width F/2: the same active MLP compute per token)
// against the dense gpt-tiny, both with the demo's schedule; plus the max/mean expert load
// of the `bias` and `swipe` balancing after warm-up. Prints both validation curves and
// writes them as JSON for BENCHMARKS.md. Nothing is asserted here.
//
//   node dist/bench/moe-quality.js [--steps N] [--out DIR] [--quick]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { runPrepare } from '../src/cli/cmd-prepare.js';
import { presetConfig, type TrainConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
}

/** max/mean expert load per logged step after warm-up, from metrics.jsonl. */
function loads(outDir: string, after: number): number[] {
  return readFileSync(join(outDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; step: number; moe?: { maxLoad: number } })
    .filter((m) => m.kind === 'step' && m.step > after && m.moe).map((m) => m.moe!.maxLoad);
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const steps = Number(arg('--steps', quick ? '60' : '700'));
  const out = arg('--out', 'runs/moe-quality');
  const dataDir = join(out, 'data');
  if (!existsSync(join(dataDir, 'train.idx'))) {
    await runPrepare([join(projectRoot(), 'data', 'demo', 'corpus.txt'), '--out', dataDir, '--vocab-size', '2048', '--val-fraction', '0.02']);
  }
  const before = os.loadavg();
  const runs: { name: string; cfg: TrainConfig }[] = [];
  const mk = (name: string, preset: string, edit: (c: TrainConfig) => void = () => undefined) => {
    const c = presetConfig(preset);
    c.data.dir = dataDir;
    c.train.outDir = join(out, name);
    c.train.steps = steps;
    c.train.evalEvery = Math.max(10, Math.floor(steps / 7));
    c.train.checkpointEvery = 0;
    c.train.logEvery = 50;
    edit(c);
    runs.push({ name, cfg: c });
  };
  mk('gpt-tiny', 'gpt-tiny');
  mk('moe-tiny-aux', 'moe-tiny');
  mk('moe-tiny-bias', 'moe-tiny', (c) => { c.model.moe!.balance = 'bias'; });
  mk('moe-tiny-swipe', 'moe-tiny', (c) => { c.model.moe!.balance = 'swipe'; c.model.moe!.capacityFactor = 1.25; });
  const result: Record<string, unknown> = { steps, loadBefore: before };
  for (const r of runs) {
    mkdirSync(r.cfg.train.outDir, { recursive: true });
    const t = await train(r.cfg, { quiet: true });
    const warm = r.cfg.optim.warmupSteps;
    const l = r.name.startsWith('moe') ? loads(r.cfg.train.outDir, warm) : [];
    const maxLoad = l.length ? Math.max(...l) : null;
    result[r.name] = { valLosses: t.valLosses, tokensPerSec: t.tokensPerSec, maxLoadAfterWarmup: maxLoad };
    console.log(`${r.name}: validation ${t.valLosses.map((v) => `${v.step}:${v.loss.toFixed(3)}`).join(' ')}; ${Math.round(t.tokensPerSec)} tokens/s` +
      (maxLoad !== null ? `; max/mean expert load after warm-up ${maxLoad.toFixed(2)}` : ''));
  }
  result.loadAfter = os.loadavg();
  writeFileSync(join(out, 'moe-quality.json'), JSON.stringify(result, null, 1));
  console.log(`load before ${before.map((x) => x.toFixed(2)).join(' ')}, after ${(result.loadAfter as number[]).map((x) => x.toFixed(2)).join(' ')}; wrote ${join(out, 'moe-quality.json')}`);
}

main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
