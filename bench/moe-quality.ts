// Quality check of issue 9 on the bundled demo corpus: at an equal number of steps,
// moe-tiny (8 experts, top-2, expert width F/2: the same active MLP compute per token)
// against the dense gpt-tiny, both with the demo's schedule; plus the max/mean expert load
// of every balancing mode (aux, bias, swipe) after warm-up. Prints both validation curves
// and writes them as JSON and as a markdown table. Nothing is asserted here.
//
//   node dist/bench/moe-quality.js [--steps N] [--balance-steps M] [--eval-every K] [--out DIR] [--quick]
//                                  [--only RUN,...] [--report]
//
// Runs: gpt-tiny, moe-tiny (aux), moe-tiny-bias, moe-tiny-swipe. --only trains a subset (start
// one process per run to use several cores); --report only reads what finished under --out.
//
// --steps: the dense / moe-tiny pair (default 700, the demo's length); --balance-steps: the
// bias and swipe runs (default: --steps); they only need to run past warm-up.
// The load figure per step is the worst MoE layer's max/mean rows per expert over that
// step's batch (metrics.jsonl `moe.maxLoad`); after warm-up we report its mean, median and
// maximum over the steps.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { runPrepare } from '../src/cli/cmd-prepare.js';
import { presetConfig, type TrainConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { machineInfo } from './machine-info.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
}

/** Per-step worst-layer max/mean expert load after warm-up, from metrics.jsonl. */
function loads(outDir: string, after: number): number[] {
  return readFileSync(join(outDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; step: number; moe?: { maxLoad: number } })
    .filter((m) => m.kind === 'step' && m.step > after && m.moe).map((m) => m.moe!.maxLoad);
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

interface RunResult {
  preset: string;
  balance: string | null;
  steps: number;
  valLosses: { step: number; loss: number }[];
  tokensPerSec: number;
  /** max/mean expert load after warm-up: mean, median and max over steps. */
  load: { steps: number; mean: number; median: number; max: number } | null;
  overrides: string[];
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const steps = Number(arg('--steps', quick ? '120' : '700'));
  const balanceSteps = Number(arg('--balance-steps', String(steps)));
  const evalEvery = Number(arg('--eval-every', String(Math.max(10, Math.floor(steps / 7)))));
  const out = arg('--out', 'runs/moe-quality');
  const dataDir = join(out, 'data');
  if (!existsSync(join(dataDir, 'train.idx'))) {
    await runPrepare([join(projectRoot(), 'data', 'demo', 'corpus.txt'), '--out', dataDir, '--vocab-size', '2048', '--val-fraction', '0.02']);
  }
  const machine = await machineInfo(projectRoot());
  const before = os.loadavg();
  const runs: { name: string; cfg: TrainConfig; overrides: string[] }[] = [];
  const mk = (name: string, preset: string, n: number, overrides: string[], edit: (c: TrainConfig) => void = () => undefined) => {
    const c = presetConfig(preset);
    c.data.dir = dataDir;
    c.train.outDir = join(out, name);
    c.train.steps = n;
    c.train.evalEvery = evalEvery;
    c.train.checkpointEvery = 0;
    c.train.logEvery = 50;
    edit(c);
    runs.push({ name, cfg: c, overrides });
  };
  mk('gpt-tiny', 'gpt-tiny', steps, []);
  mk('moe-tiny', 'moe-tiny', steps, []);
  mk('moe-tiny-bias', 'moe-tiny', balanceSteps, ['--model.moe.balance=bias'], (c) => { c.model.moe!.balance = 'bias'; });
  mk('moe-tiny-swipe', 'moe-tiny', balanceSteps, ['--model.moe.balance=swipe', '--model.moe.capacityFactor=1.25'], (c) => { c.model.moe!.balance = 'swipe'; c.model.moe!.capacityFactor = 1.25; });
  // --only a,b: train just those runs (e.g. one per process, on a shared machine); the report
  // below always reads every finished run under --out from its metrics.jsonl.
  const only = arg('--only', '').split(',').filter(Boolean);
  for (const n of only) if (!runs.some((r) => r.name === n)) throw new Error(`--only: unknown run '${n}' (runs: ${runs.map((r) => r.name).join(', ')})`);
  if (!process.argv.includes('--report')) {
    for (const r of runs) {
      if (only.length && !only.includes(r.name)) continue;
      mkdirSync(r.cfg.train.outDir, { recursive: true });
      await train(r.cfg, { quiet: true });
    }
  }
  const results: Record<string, RunResult> = {};
  for (const r of runs) {
    const f = join(r.cfg.train.outDir, 'metrics.jsonl');
    if (!existsSync(f)) continue;
    const recs = readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; step?: number; valLoss?: number; tokensPerSec?: number; steps?: number });
    const summary = recs.find((m) => m.kind === 'summary');
    if (!summary) continue; // unfinished
    const valLosses = recs.filter((m) => m.kind === 'eval').map((m) => ({ step: m.step!, loss: m.valLoss! }));
    const moe = r.cfg.model.moe && r.cfg.model.moe.experts > 0 ? r.cfg.model.moe : null;
    const l = moe ? loads(r.cfg.train.outDir, r.cfg.optim.warmupSteps) : [];
    const load = l.length ? { steps: l.length, mean: l.reduce((a, b) => a + b, 0) / l.length, median: median(l), max: Math.max(...l) } : null;
    results[r.name] = { preset: r.cfg.preset, balance: moe ? moe.balance : null, steps: summary.steps!, valLosses, tokensPerSec: summary.tokensPerSec!, load, overrides: r.overrides };
    console.log(`${r.name}: validation ${valLosses.map((v) => `${v.step}:${v.loss.toFixed(3)}`).join(' ')}; ${Math.round(summary.tokensPerSec!)} tokens/s` +
      (load ? `; max/mean expert load after warm-up (step > ${r.cfg.optim.warmupSteps}): mean ${load.mean.toFixed(3)} median ${load.median.toFixed(3)} max ${load.max.toFixed(3)}` : ''));
  }
  const after = os.loadavg();
  const result = { machine, loadBefore: before, loadAfter: after, steps, balanceSteps, evalEvery, runs: results };
  writeFileSync(join(out, 'moe-quality.json'), JSON.stringify(result, null, 1));
  writeFileSync(join(out, 'moe-quality.md'), markdown(result));
  console.log(markdown(result));
  console.log(`load before ${before.map((x) => x.toFixed(2)).join(' ')}, after ${after.map((x) => x.toFixed(2)).join(' ')}; wrote ${join(out, 'moe-quality.json')} and .md`);
}

function markdown(r: { machine: { cpuModel: string; logicalCpus: number }; loadBefore: number[]; loadAfter: number[]; steps: number; runs: Record<string, RunResult> }): string {
  const lines: string[] = [];
  const names = Object.keys(r.runs);
  const stepsSeen = [...new Set(names.flatMap((n) => r.runs[n]!.valLosses.map((v) => v.step)))].sort((a, b) => a - b);
  lines.push(`Machine: ${r.machine.cpuModel}, ${r.machine.logicalCpus} logical CPUs; load average before ${r.loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${r.loadAfter.map((x) => x.toFixed(2)).join(' ')}.`, '');
  lines.push(`Validation loss (nats/token) by step:`, '');
  lines.push(`| step | ${names.join(' | ')} |`, `|---:|${names.map(() => '---:').join('|')}|`);
  for (const s of stepsSeen) lines.push(`| ${s} | ${names.map((n) => { const v = r.runs[n]!.valLosses.find((x) => x.step === s); return v ? v.loss.toFixed(4) : ''; }).join(' | ')} |`);
  lines.push('', '| run | balance | steps | tokens/s | max/mean load after warm-up: mean | median | max |', '|---|---|---:|---:|---:|---:|---:|');
  for (const n of names) {
    const x = r.runs[n]!;
    lines.push(`| ${n} | ${x.balance ?? '(dense)'} | ${x.steps} | ${Math.round(x.tokensPerSec)} | ${x.load ? x.load.mean.toFixed(3) : '–'} | ${x.load ? x.load.median.toFixed(3) : '–'} | ${x.load ? x.load.max.toFixed(3) : '–'} |`);
  }
  return lines.join('\n') + '\n';
}

main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
