// Quality check of issue 9 on the bundled demo corpus: at an equal number of steps,
// moe-tiny (8 experts, top-2, expert width F/2: the same active MLP compute per token)
// against the dense gpt-tiny, both with the demo's schedule; plus the max/mean expert load
// of every balancing mode (aux, bias, swipe) after warm-up. Prints both validation curves
// and writes them as JSON and as a markdown table. Nothing is asserted here.
//
//   node dist/bench/moe-quality.js [--steps N] [--balance-steps M] [--eval-every K] [--out DIR] [--quick]
//                                  [--only RUN,...] [--report] [--partial] [--window W]
//
// Runs: gpt-tiny, moe-tiny (aux), moe-tiny-bias, moe-tiny-swipe. --only trains a subset (start
// one process per run to use several cores); --report only reads what finished under --out
// (--partial: runs still under way too, to their last step).
//
// --steps: the dense / moe-tiny pair (default 700, the demo's length); --balance-steps: the
// bias and swipe runs (default: --steps); they only need to run past warm-up.
// The load figure per step is the worst MoE layer's max/mean rows per expert over that
// step's batch (metrics.jsonl `moe.maxLoad`); after warm-up we report its mean, median and
// maximum over the steps and the share of steps at or under 1.3. For scale, also: the same
// figure for a perfectly balanced router at this batch (every token's K experts drawn
// uniformly: pure sampling noise), and a windowed figure (rows summed over WINDOW steps
// before max/mean), which is NOT the headline: the check is per step.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { runPrepare } from '../src/cli/cmd-prepare.js';
import { presetConfig, type TrainConfig } from '../src/train/config.js';
import { evaluate, train } from '../src/train/trainer.js';
import { loadForInference } from '../src/train/train-checkpoint.js';
import { openIndexedDataset } from '../src/data/indexed-dataset-reader.js';
import { machineInfo } from './machine-info.js';
import { Rng } from '../src/core/rng.js';

/** Steps whose rows are summed for the windowed load figure (--window). */
let WINDOW = 10;

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
}

type StepRec = { kind: string; step: number; moe?: { maxLoad: number; load: number[][]; dropRate: number; movedRate: number } };

/** Per-step worst-layer max/mean expert load after warm-up, from metrics.jsonl. */
function stepRecords(outDir: string, after: number): StepRec[] {
  return readFileSync(join(outDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as StepRec)
    .filter((m) => m.kind === 'step' && m.step > after && m.moe);
}

/** Summary of a max/mean series: mean, 90th percentile, max, share ≤ 1.3, count. */
export interface LoadStat { n: number; mean: number; p90: number; max: number; within13: number }

export function loadStat(xs: number[]): LoadStat {
  if (!xs.length) return { n: 0, mean: NaN, p90: NaN, max: NaN, within13: NaN };
  const s = [...xs].sort((a, b) => a - b);
  return {
    n: xs.length, mean: xs.reduce((a, b) => a + b, 0) / xs.length, p90: s[Math.min(s.length - 1, Math.ceil(0.9 * s.length) - 1)]!,
    max: s[s.length - 1]!, within13: xs.filter((x) => x <= 1.3).length / xs.length,
  };
}

const ratioOf = (c: ArrayLike<number>) => { const a = Array.from(c); const m = a.reduce((x, y) => x + y, 0) / a.length; return m > 0 ? Math.max(...a) / m : NaN; };

/**
 * max/mean rows per expert, per MoE layer and the worst layer, for every step (what
 * metrics.jsonl's moe.maxLoad and the progress line show: one step's global batch) and for
 * consecutive windows of w steps (rows summed over the window first).
 */
export function loadSeries(recs: StepRec[], w: number): { step: { layers: number[][]; worst: number[] }; window: { layers: number[][]; worst: number[] } } {
  const L = recs.length ? recs[0]!.moe!.load.length : 0;
  const step = { layers: Array.from({ length: L }, () => [] as number[]), worst: [] as number[] };
  const win = { layers: Array.from({ length: L }, () => [] as number[]), worst: [] as number[] };
  for (const r of recs) {
    const per = r.moe!.load.map(ratioOf);
    per.forEach((x, l) => step.layers[l]!.push(x));
    step.worst.push(Math.max(...per));
  }
  for (let i = 0; i + w <= recs.length; i += w) {
    const per = recs[i]!.moe!.load.map((_, l) => {
      const sum = new Float64Array(recs[i]!.moe!.load[l]!.length);
      for (let j = i; j < i + w; j++) recs[j]!.moe!.load[l]!.forEach((x, e) => { sum[e]! += x; });
      return ratioOf(sum);
    });
    per.forEach((x, l) => win.layers[l]!.push(x));
    win.worst.push(Math.max(...per));
  }
  return { step, window: win };
}

/**
 * Expected per-step worst-layer max/mean of a perfectly balanced router: N tokens each draw
 * K distinct experts uniformly, in each of L layers (Monte Carlo, fixed seed).
 */
export function balancedFloor(N: number, E: number, K: number, L: number, reps = 2000): number {
  const rng = new Rng(1);
  const c = new Float64Array(E), pick = new Int32Array(E);
  let acc = 0;
  for (let r = 0; r < reps; r++) {
    let worst = 0;
    for (let l = 0; l < L; l++) {
      c.fill(0);
      for (let t = 0; t < N; t++) {
        for (let e = 0; e < E; e++) pick[e] = e;
        for (let k = 0; k < K; k++) { const j = k + rng.int(E - k); const x = pick[j]!; pick[j] = pick[k]!; pick[k] = x; c[x]!++; }
      }
      worst = Math.max(worst, Math.max(...c) / ((N * K) / E));
    }
    acc += worst;
  }
  return acc / reps;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

interface RunResult {
  preset: string;
  balance: string | null;
  steps: number;
  valLosses: { step: number; loss: number }[];
  tokensPerSec: number;
  /** max/mean expert load after warm-up: mean, median and max over steps, share of steps ≤ 1.3, windowed mean, balanced-router floor. */
  load: { steps: number; mean: number; median: number; max: number; within13: number; windowed: number; floor: number } | null;
  /** The same per layer and worst layer, per step and per WINDOW-step window; drop and moved rates after warm-up (mean over steps). */
  detail: { perStep: { worst: LoadStat; layers: LoadStat[] }; perWindow: { worst: LoadStat; layers: LoadStat[] }; dropRate: number; movedRate: number; sequences: number } | null;
  overrides: string[];
  /**
   * Runs trained with a capacity (drop, SWIPE or reroute): the final checkpoint's validation
   * loss as trained (per-sequence capacity: a token's expert can depend on later tokens of its
   * sequence) and with dropless routing (each token's own top-K: causal, as generation sees it).
   */
  causal?: { asTrained: number; dropless: number };
}

/** Validation loss of a run's final checkpoint, as configured and with capacityFactor 0. */
function causalEval(outDir: string, dataDir: string): { asTrained: number; dropless: number } | undefined {
  if (!existsSync(join(outDir, 'checkpoints', 'latest'))) return undefined;
  const { model, config } = loadForInference(outDir, join(dataDir, 'tokenizer.json'));
  const val = openIndexedDataset(join(dataDir, 'val'));
  const asTrained = evaluate(model, val, config);
  for (const m of model.moeLayers()) m.cfg.capacityFactor = 0;
  return { asTrained, dropless: evaluate(model, val, config) };
}

async function main(): Promise<void> {
  if (process.argv.includes('--help')) {
    console.log('node dist/bench/moe-quality.js [--steps N] [--balance-steps M] [--eval-every K] [--out DIR] [--quick] [--only RUN,...] [--report]\n' +
      'runs: gpt-tiny, moe-tiny (aux), moe-tiny-bias, moe-tiny-bias-ga4, moe-tiny-swipe; --report only reads the finished runs under --out (default runs/moe-quality)');
    return;
  }
  const quick = process.argv.includes('--quick');
  WINDOW = Number(arg('--window', String(WINDOW)));
  if (!(Number.isInteger(WINDOW) && WINDOW >= 1)) throw new Error(`--window must be an integer >= 1, got ${arg('--window', '')}`);
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
  // The bias controller can only react to past loads, and at 16 sequences per step the
  // demand per expert moves from batch to batch (bench/moe-bias-bound.ts); the same run with
  // a 4× global batch (gradAccum 4: 64 sequences per step) shows how that bound scales.
  mk('moe-tiny-bias-ga4', 'moe-tiny', balanceSteps, ['--model.moe.balance=bias', '--train.gradAccum=4'], (c) => { c.model.moe!.balance = 'bias'; c.train.gradAccum = 4; });
  mk('moe-tiny-swipe', 'moe-tiny', balanceSteps, ['--model.moe.balance=swipe', '--model.moe.capacityFactor=1.25'], (c) => { c.model.moe!.balance = 'swipe'; c.model.moe!.capacityFactor = 1.25; });
  // bias with a per-sequence capacity (DeepSeek-V2's token dropping): the rows per expert are
  // capped by construction; the price is the drop rate, compared with aux and none at the same
  // capacity factor.
  const cap = (name: string, balance: 'bias' | 'aux' | 'none') =>
    mk(name, 'moe-tiny', balanceSteps, [`--model.moe.balance=${balance}`, '--model.moe.capacityFactor=1.25'], (c) => { c.model.moe!.balance = balance; c.model.moe!.capacityFactor = 1.25; });
  cap('moe-tiny-bias-cap', 'bias');
  cap('moe-tiny-aux-cap', 'aux');
  cap('moe-tiny-none-cap', 'none');
  // bias with the same capacity met by rerouting (model.moe.overflow = reroute): each sequence's
  // over-capacity experts lose the tokens with the smallest selection margin to their next
  // choice instead of dropping tokens in position order.
  mk('moe-tiny-bias-reroute', 'moe-tiny', balanceSteps, ['--model.moe.balance=bias', '--model.moe.capacityFactor=1.25', '--model.moe.overflow=reroute'],
    (c) => { c.model.moe!.balance = 'bias'; c.model.moe!.capacityFactor = 1.25; c.model.moe!.overflow = 'reroute'; });
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
    const found = recs.find((m) => m.kind === 'summary');
    // --partial: also report runs still under way (to the last step written), marked as such
    if (!found && !process.argv.includes('--partial')) continue;
    const lastStep = recs.filter((m) => m.kind === 'step').at(-1)?.step ?? 0;
    const summary = found ?? { steps: lastStep, tokensPerSec: NaN };
    const name = found ? r.name : `${r.name} (running: ${lastStep} of ${r.cfg.train.steps} steps)`;
    const valLosses = recs.filter((m) => m.kind === 'eval').map((m) => ({ step: m.step!, loss: m.valLoss! }));
    const moe = r.cfg.model.moe && r.cfg.model.moe.experts > 0 ? r.cfg.model.moe : null;
    const srecs = moe ? stepRecords(r.cfg.train.outDir, r.cfg.optim.warmupSteps) : [];
    const l = srecs.map((m) => m.moe!.maxLoad);
    const tokens = r.cfg.train.microBatch * r.cfg.train.gradAccum * r.cfg.model.seqLen;
    const series = loadSeries(srecs, WINDOW);
    const wmean = series.window.worst.length ? series.window.worst.reduce((a, b) => a + b, 0) / series.window.worst.length : NaN;
    const load = l.length && moe ? {
      steps: l.length, mean: l.reduce((a, b) => a + b, 0) / l.length, median: median(l), max: Math.max(...l),
      within13: l.filter((x) => x <= 1.3).length / l.length, windowed: wmean,
      floor: balancedFloor(tokens, moe.experts, moe.topK, srecs[0]!.moe!.load.length),
    } : null;
    const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const detail = l.length && moe ? {
      perStep: { worst: loadStat(series.step.worst), layers: series.step.layers.map(loadStat) },
      perWindow: { worst: loadStat(series.window.worst), layers: series.window.layers.map(loadStat) },
      dropRate: avg(srecs.map((m) => m.moe!.dropRate)), movedRate: avg(srecs.map((m) => m.moe!.movedRate ?? 0)),
      sequences: r.cfg.train.microBatch * r.cfg.train.gradAccum,
    } : null;
    const causal = found && moe && moe.capacityFactor > 0 ? causalEval(r.cfg.train.outDir, dataDir) : undefined;
    results[name] = { preset: r.cfg.preset, balance: moe ? moe.balance : null, steps: summary.steps!, valLosses, tokensPerSec: summary.tokensPerSec!, load, detail, overrides: r.overrides, ...(causal ? { causal } : {}) };
    console.log(`${name}: validation ${valLosses.map((v) => `${v.step}:${v.loss.toFixed(3)}`).join(' ')}; ${Math.round(summary.tokensPerSec!)} tokens/s` +
      (load ? `; max/mean expert load after warm-up (step > ${r.cfg.optim.warmupSteps}): mean ${load.mean.toFixed(3)} median ${load.median.toFixed(3)} max ${load.max.toFixed(3)}, ${(100 * load.within13).toFixed(0)}% of steps <= 1.3; over ${WINDOW}-step windows ${load.windowed.toFixed(3)}; balanced-router floor ${load.floor.toFixed(3)}` : ''));
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
  lines.push('', `Per step, worst MoE layer, after warm-up: max/mean expert load (mean, median, max over steps; share of steps <= 1.3); a perfectly balanced router would show the floor (sampling noise at this batch); the ${WINDOW}-step window figure sums rows over ${WINDOW} steps first (not the per-step check).`, '');
  lines.push('| run | balance | steps | tokens/s | per-step mean | median | max | steps <= 1.3 | floor | ' + `${WINDOW}-step windows |`, '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const f = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? '–' : v.toFixed(3));
  for (const n of names) {
    const x = r.runs[n]!, l = x.load;
    lines.push(`| ${n} | ${x.balance ?? '(dense)'} | ${x.steps} | ${Math.round(x.tokensPerSec)} | ${f(l?.mean)} | ${f(l?.median)} | ${f(l?.max)} | ${l ? `${(100 * l.within13).toFixed(0)}%` : '–'} | ${f(l?.floor)} | ${f(l?.windowed)} |`);
  }
  const withCausal = names.filter((n) => r.runs[n]!.causal);
  if (withCausal.length) {
    lines.push('', 'Runs with a per-sequence capacity, final checkpoint: validation loss as trained (capacity applied per sequence, so routing can depend on later tokens of the sequence) and with dropless routing (capacityFactor 0: each token\'s own top-K, causal):', '');
    lines.push('| run | as trained | dropless routing |', '|---|---:|---:|');
    for (const n of withCausal) lines.push(`| ${n} | ${r.runs[n]!.causal!.asTrained.toFixed(4)} | ${r.runs[n]!.causal!.dropless.toFixed(4)} |`);
  }
  // Per layer and worst layer, per step and per window; the drop and moved rates.
  const pct = (v: number) => (Number.isNaN(v) ? '–' : `${(100 * v).toFixed(0)}%`);
  const st = (s: LoadStat) => `${f(s.mean)} | ${f(s.p90)} | ${f(s.max)} | ${pct(s.within13)}`;
  lines.push('', `After warm-up, max/mean expert load per step (one step's global batch: metrics.jsonl \`moe.load\`, and the figure the progress line prints for the logged step) and per ${WINDOW}-step window (rows summed over the window), each MoE layer and the worst layer: mean | p90 | max | share <= 1.3. drop: assignments dropped by capacity; moved: assignments sent to an expert the router did not pick (SWIPE or reroute).`, '');
  lines.push(`| run | sequences/step | drop | moved | layer | per step: mean | p90 | max | <= 1.3 | per ${WINDOW} steps: mean | p90 | max | <= 1.3 |`, '|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const n of names) {
    const d = r.runs[n]!.detail;
    if (!d) continue;
    const rows: [string, LoadStat, LoadStat][] = [['worst', d.perStep.worst, d.perWindow.worst], ...d.perStep.layers.map((s, i) => [`${i}`, s, d.perWindow.layers[i]!] as [string, LoadStat, LoadStat])];
    rows.forEach(([name, a, b], i) => lines.push(`| ${i === 0 ? n : ''} | ${i === 0 ? d.sequences : ''} | ${i === 0 ? `${(100 * d.dropRate).toFixed(2)}%` : ''} | ${i === 0 ? `${(100 * d.movedRate).toFixed(2)}%` : ''} | ${name} | ${st(a)} | ${st(b)} |`));
  }
  return lines.join('\n') + '\n';
}

main().then(() => process.exit(0), (e: unknown) => { console.error(e); process.exit(1); });
