// Accuracy of mixed precision (issue 10's check): the demo configuration (gpt-tiny,
// 700 steps) and gpt-small (300 steps) on the bundled demo corpus, each trained in fp32
// and in bf16 from the same data, seed and schedule; prints both validation curves and
// the final ratio (goal: bf16 within 1% of fp32). gpt-small runs with the demo
// tokenizer's vocabulary (2048) because that is what the demo data is prepared with.
//
//   node dist/bench/precision-accuracy.js [--quick] [--only tiny|small] [--threads N]
//       [--concurrent] [--work DIR] [--report] [--small-steps N]
//
// --quick: 120 tiny steps and 60 small steps (a smoke run of the script, not the check).
// --concurrent: the fp32 and bf16 runs of a model train at the same time (on a loaded
//   machine that finishes sooner; the curves do not depend on it).
// --work DIR: prepared data and run directories there (kept); --report: only print the
//   curves of the runs already in DIR (e.g. while they are still training).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
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

function trainArgs(cli: string, data: string, work: string, model: 'gpt-tiny' | 'gpt-small', precision: string, steps: number, threads: number): { args: string[]; out: string } {
  const out = join(work, `${model}-${precision}`);
  const extra = model === 'gpt-small'
    ? ['--model.vocabSize=2048', `--train.evalEvery=${Math.max(10, Math.round(steps / 6))}`, '--train.evalBatches=10']
    : [`--train.evalEvery=${Math.max(10, Math.round(steps / 7))}`];
  return {
    out,
    args: [cli, 'train', '--preset', model, `--data.dir=${data}`, `--train.outDir=${out}`, `--train.steps=${steps}`,
      `--train.threads=${threads}`, `--train.precision=${precision}`, '--train.checkpointEvery=100000', ...extra],
  };
}

function readRun(out: string, model: string, precision: string, seconds: number): Run {
  const rows = existsSync(join(out, 'metrics.jsonl'))
    ? readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').filter((l) => l).map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];
  const curve = rows.filter((x) => x.kind === 'eval').map((x) => ({ step: x.step as number, valLoss: x.valLoss as number }));
  const summary = rows.find((x) => x.kind === 'summary');
  return { model, precision, curve, seconds, tokensPerSec: (summary?.tokensPerSec as number | undefined) ?? null };
}

function trainOne(a: { args: string[]; out: string }, model: string, precision: string): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, a.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => { err = (err + String(d)).slice(-3000); });
    c.on('close', (code) => {
      if (code !== 0) reject(new Error(`${model} ${precision} failed (exit ${code}):\n${err}`));
      else resolve(readRun(a.out, model, precision, (Date.now() - t0) / 1000));
    });
  });
}

/** Prints both curves; returns the final relative gap (null if either run has no evaluation yet). */
function report(model: string, steps: number, f: Run, b: Run): number | null {
  console.log(`\nvalidation loss, ${model}, ${steps} steps, demo corpus (same data, seed, schedule):`);
  console.log('  step    fp32     bf16   bf16/fp32');
  const all = [...new Set([...f.curve, ...b.curve].map((x) => x.step))].sort((x, y) => x - y);
  for (const s of all) {
    const p = f.curve.find((x) => x.step === s), q = b.curve.find((x) => x.step === s);
    console.log(`  ${String(s).padStart(4)}  ${p ? p.valLoss.toFixed(4) : '   -  '}  ${q ? q.valLoss.toFixed(4) : '   -  '}  ${p && q ? (q.valLoss / p.valLoss).toFixed(4) : ''}`);
  }
  const both = all.filter((s) => f.curve.some((x) => x.step === s) && b.curve.some((x) => x.step === s));
  const last = both.at(-1);
  if (last === undefined) return null;
  const fa = f.curve.find((x) => x.step === last)!, fb = b.curve.find((x) => x.step === last)!;
  const pct = 100 * Math.abs(fb.valLoss / fa.valLoss - 1);
  const done = last === steps ? 'final' : `at step ${last} of ${steps} (runs not finished)`;
  console.log(`${model} ${done}: fp32 ${fa.valLoss.toFixed(4)}, bf16 ${fb.valLoss.toFixed(4)}: ${pct.toFixed(2)}% apart (goal ≤ 1%) ${pct <= 1 ? 'OK' : 'NOT MET'}`);
  return last === steps ? pct : null;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const only = arg('--only');
  const threads = Number(arg('--threads') ?? 2);
  const root = projectRoot();
  const cli = join(root, 'dist', 'src', 'cli', 'main.js');
  const m = await machineInfo(root);
  console.log(`machine: ${m.cpuModel}, ISA ${m.isa.join(' ')}, ${m.logicalCpus} logical CPUs; load average now ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const workArg = arg('--work');
  const work = workArg ?? mkdtempSync(join(tmpdir(), 'athanor-prec-acc-'));
  mkdirSync(work, { recursive: true });
  const data = join(work, 'data');
  const jobs: ['gpt-tiny' | 'gpt-small', number][] = [];
  if (only !== 'small') jobs.push(['gpt-tiny', quick ? 120 : 700]);
  if (only !== 'tiny') jobs.push(['gpt-small', Number(arg('--small-steps') ?? (quick ? 60 : 300))]);
  if (process.argv.includes('--report')) {
    for (const [model, steps] of jobs) report(model, steps, readRun(join(work, `${model}-fp32`), model, 'fp32', 0), readRun(join(work, `${model}-bf16`), model, 'bf16', 0));
    return;
  }
  if (!existsSync(join(data, 'train.idx'))) {
    const r = spawnSync(process.execPath, [cli, 'prepare', join(root, 'data', 'demo', 'corpus.txt'), '--out', data, '--vocab-size', '2048', '--val-fraction', '0.02'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stdout + r.stderr);
  }
  let ok = true;
  for (const [model, steps] of jobs) {
    const run = (p: string) => trainOne(trainArgs(cli, data, work, model, p, steps, threads), model, p);
    const runs = process.argv.includes('--concurrent') ? await Promise.all([run('fp32'), run('bf16')]) : [await run('fp32'), await run('bf16')];
    for (const r of runs) console.log(`  ${model} ${r.precision}: ${steps} steps in ${r.seconds.toFixed(0)} s (${r.tokensPerSec?.toFixed(0) ?? '?'} tokens/s, load average ${loadavg()[0]!.toFixed(1)})`);
    const pct = report(model, steps, runs[0]!, runs[1]!);
    if (pct === null || pct > 1) ok = false;
  }
  console.log(`load average after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  if (!ok && !quick) process.exitCode = 1;
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
