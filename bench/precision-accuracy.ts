// Accuracy of mixed precision (issue 10's check): the demo configuration (gpt-tiny,
// 700 steps) and gpt-small (300 steps) on the bundled demo corpus, each trained in fp32
// and in bf16 from the same data, seed and schedule; prints both validation curves and
// the final ratio (goal: bf16 within 1% of fp32). gpt-small runs with the demo
// tokenizer's vocabulary (2048) because that is what the demo data is prepared with.
//
//   node dist/bench/precision-accuracy.js [--quick] [--only tiny|small] [--threads N]
//
// --quick: 120 tiny steps and 60 small steps (a smoke run of the script, not the check).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { machineInfo } from './machine-info.js';

interface Curve { step: number; valLoss: number }
interface Run { model: string; precision: string; curve: Curve[]; seconds: number; tokensPerSec: number | null }

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function trainOnce(cli: string, data: string, work: string, model: 'gpt-tiny' | 'gpt-small', precision: string, steps: number, threads: number): Run {
  const out = join(work, `${model}-${precision}`);
  const extra = model === 'gpt-small'
    ? ['--model.vocabSize=2048', `--train.evalEvery=${Math.max(10, Math.round(steps / 6))}`, '--train.evalBatches=10']
    : [`--train.evalEvery=${Math.max(10, Math.round(steps / 7))}`];
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [cli, 'train', '--preset', model, `--data.dir=${data}`, `--train.outDir=${out}`, `--train.steps=${steps}`,
    `--train.threads=${threads}`, `--train.precision=${precision}`, '--train.checkpointEvery=100000', ...extra], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${model} ${precision} failed:\n${(r.stdout + r.stderr).slice(-3000)}`);
  const rows = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const curve = rows.filter((x) => x.kind === 'eval').map((x) => ({ step: x.step as number, valLoss: x.valLoss as number }));
  const summary = rows.find((x) => x.kind === 'summary');
  return { model, precision, curve, seconds: (Date.now() - t0) / 1000, tokensPerSec: (summary?.tokensPerSec as number | undefined) ?? null };
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const only = arg('--only');
  const threads = Number(arg('--threads') ?? 2);
  const root = projectRoot();
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  const m = await machineInfo(root);
  console.log(`machine: ${m.cpuModel}, ISA ${m.isa.join(' ')}, ${m.logicalCpus} logical CPUs; load average before ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const work = mkdtempSync(join(tmpdir(), 'athanor-prec-acc-'));
  const data = join(work, 'data');
  const r = spawnSync(process.execPath, [cli, 'prepare', join(root, 'data', 'demo', 'corpus.txt'), '--out', data, '--vocab-size', '2048', '--val-fraction', '0.02'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stdout + r.stderr);
  const jobs: ['gpt-tiny' | 'gpt-small', number][] = [];
  if (only !== 'small') jobs.push(['gpt-tiny', quick ? 120 : 700]);
  if (only !== 'tiny') jobs.push(['gpt-small', quick ? 60 : 300]);
  let ok = true;
  for (const [model, steps] of jobs) {
    const runs = ['fp32', 'bf16'].map((p) => {
      const run = trainOnce(cli, data, work, model, p, steps, threads);
      console.log(`  ${model} ${p}: ${steps} steps in ${run.seconds.toFixed(0)} s (${run.tokensPerSec?.toFixed(0) ?? '?'} tokens/s, loaded machine)`);
      return run;
    });
    const [f, b] = runs as [Run, Run];
    console.log(`\nvalidation loss, ${model}, ${steps} steps, demo corpus (same data, seed, schedule):`);
    console.log('  step    fp32     bf16   bf16/fp32');
    for (const p of f.curve) {
      const q = b.curve.find((x) => x.step === p.step);
      console.log(`  ${String(p.step).padStart(4)}  ${p.valLoss.toFixed(4)}  ${q ? q.valLoss.toFixed(4) : '   -  '}  ${q ? (q.valLoss / p.valLoss).toFixed(4) : ''}`);
    }
    const fa = f.curve.at(-1), fb = b.curve.at(-1);
    if (fa && fb) {
      const pct = 100 * Math.abs(fb.valLoss / fa.valLoss - 1);
      console.log(`final ${model}: fp32 ${fa.valLoss.toFixed(4)}, bf16 ${fb.valLoss.toFixed(4)}: ${pct.toFixed(2)}% apart (goal ≤ 1%) ${pct <= 1 ? 'OK' : 'NOT MET'}`);
      if (pct > 1) ok = false;
    }
  }
  console.log(`load average after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  if (!ok && !quick) process.exitCode = 1;
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
