// Predicted vs measured on this machine, for every layout that runs here: the real
// trainer (bench/plan-validate-worker.ts, one BLAS/kernel thread per rank, as the
// calibration's "device = one core") against `athanor plan`'s estimate with the
// calibrated clusters/this-machine.json. Reports step time (median over steps after
// the first, median over rounds) against the plan's step; CPU-seconds per step of the
// busiest rank against the plan's busy time (compute, optimizer and communication work,
// no bubble or waiting: what a loaded machine can still measure); and peak tensor memory
// per rank (unreachable arrays collected at step boundaries, see the worker), with errors.
//
//   node dist/bench/plan-validate-bench.js [--quick] [--calibrate | --calibrate-each-round] [--steps N] [--rounds N] [--cluster FILE] [--only 'SUBSTR|SUBSTR']
// --calibrate measures this machine first (as `athanor plan --calibrate`) into a temporary spec.
// --calibrate-each-round calibrates again before every round, and a case's prediction is the
// median over rounds of its prediction from the calibration just before that round. Why: this
// VM's speed drifts with its neighbours (the same 1-thread GEMM read 50-71 GFLOP/s over 90 s,
// and gpt-tiny's quiet step 0.38-0.53 s between invocations), so a calibration taken once
// samples a minute of that drift while the measured medians sample the whole run; calibrating
// per round makes the predictions sample the same period as the measurements.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir, cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { loadCluster } from '../src/plan/cluster.js';
import { estimate, type Estimate } from '../src/plan/estimate.js';
import { devices, parseLayout, layoutString } from '../src/plan/layout.js';
import { traceForLayout } from '../src/plan/models.js';
import { parseArgs } from '../src/train/overrides.js';
import { calibrate } from '../src/plan/calibrate.js';
import { epRoutingLoad } from '../src/plan/ep-routing-load.js';

/** `over`: config overrides (dotted keys) for both the run and the plan. */
interface Case { preset: string; layout: string; over?: Record<string, string> }
const caseName = (c: Case): string => `${c.preset} ${c.layout}${c.over ? ' ' + Object.entries(c.over).map(([k, v]) => `${k}=${v}`).join(' ') : ''}`;

const CASES: Case[] = [
  { preset: 'gpt-tiny', layout: 'dp=1,mb=16' },
  { preset: 'gpt-tiny', layout: 'dp=1,mb=16,recompute=full' },
  { preset: 'gpt-small', layout: 'dp=1,mb=4' },
  { preset: 'gpt-small', layout: 'dp=1,mb=4,recompute=full' },
  { preset: 'gpt-small', layout: 'dp=1,mb=2,ga=2' },
  { preset: 'gpt-tiny', layout: 'dp=2,mb=16' },
  { preset: 'gpt-small', layout: 'dp=2,mb=4,zero=0' },
  { preset: 'gpt-small', layout: 'dp=2,mb=4,zero=1' },
  { preset: 'gpt-small', layout: 'dp=2,mb=4,zero=2' },
  { preset: 'gpt-small', layout: 'dp=2,mb=4,zero=3' },
  // ZeRO-Infinity style disk offload of the optimizer state (the bench gives it a scratch directory).
  { preset: 'gpt-small', layout: 'dp=2,mb=4,zero=1,offload=disk' },
  // Tensor and pipeline parallelism (each schedule), expert parallelism, bf16.
  { preset: 'gpt-tiny', layout: 'tp=2,mb=16' },
  { preset: 'gpt-tiny', layout: 'tp=2,sp=true,mb=16' },
  { preset: 'gpt-tiny', layout: 'pp=2,mb=4,ga=4,schedule=gpipe' },
  { preset: 'gpt-tiny', layout: 'pp=2,mb=4,ga=4,schedule=1f1b' },
  { preset: 'gpt-tiny', layout: 'pp=2,mb=4,ga=4,schedule=interleaved,vpp=2' },
  { preset: 'moe-tiny', layout: 'dp=1,mb=16' },
  { preset: 'moe-tiny', layout: 'dp=2,ep=2,mb=16' },
  // The plan's routing assumption held by construction: SWIPE at capacity 1.0 gives every
  // expert exactly its share, where dropless routing from initialisation sends a rank
  // 0.4-1.6× its balanced rows (BENCHMARKS.md).
  { preset: 'moe-tiny', layout: 'dp=2,ep=2,mb=16', over: { 'model.moe.balance': 'swipe', 'model.moe.capacityFactor': '1' } },
  { preset: 'gpt-tiny', layout: 'dp=1,mb=16,precision=bf16' },
  { preset: 'gpt-small', layout: 'dp=1,mb=4,precision=bf16' },
];

export interface ValidateRow {
  preset: string; layout: string;
  predictedStepS: number; measuredStepS: number; stepError: number;
  /** CPU seconds per step of the busiest rank (what an uncontended core would take), against the plan's busy time. */
  predictedBusyS: number; measuredCpuS: number; cpuError: number;
  /** Memory outside the buffer pool at the measured peak (transport buffers, unpooled arrays). */
  outsidePoolB: number;
  predictedMemB: number; measuredMemB: number; memError: number; poolLivePeakB: number;
  /** Steps measured per round (after the warm-up), raised for short steps (TARGET_MEASURED_S). */
  measuredSteps: number;
  /** (slowest − fastest round median) / median: how far the same case moves between runs. */
  roundSpread: number;
  /** Median over rounds of a run's interquartile range of steps over its median. */
  stepSpread: number;
}

// The conventional median: for an even count, the mean of the middle two (the upper one alone
// made every 2-round figure its slower round, and every error look like an under-prediction).
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); const h = s.length >> 1; return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2; };

function data(dir: string): void {
  const rng = new Rng(5);
  for (const [split, n] of [['train', 200_000], ['val', 20_000]] as const) {
    const w = new IndexedDatasetWriter(join(dir, split), { dtype: 'uint16' });
    const doc = new Uint16Array(1000);
    for (let i = 0; i < n; i += 1000) { for (let j = 0; j < 1000; j++) doc[j] = rng.int(2048); w.addDocument(doc); }
    w.finish();
  }
  writeFileSync(join(dir, 'meta.json'), JSON.stringify({ tokenizer: { vocabSize: 2048 } }));
}

/** (upper quartile − lower quartile) / median: how far a run's steps move about their median. */
const spread = (xs: number[]): number => {
  if (xs.length < 2) return 0;
  const s = [...xs].sort((a, b) => a - b), q = (f: number): number => { const i = f * (s.length - 1), lo = Math.floor(i); return s[lo]! + (i - lo) * (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!); };
  return (q(0.75) - q(0.25)) / median(s);
};

/** Seconds of measured steps a case aims for (its step count is raised for short steps, up to MAX_STEPS): four 0.4 s steps left one slow step a quarter of the median's sample. */
const TARGET_MEASURED_S = 4;
const MAX_STEPS = 16;
/** Steps left out as warm-up (the worker's WARMUP_STEPS: first allocations, and the buffer pool keeps a size only once it recurs). */
const WARMUP = 2;

function measure(c: Case, dataDir: string, steps: number): { stepS: number; stepSpread: number; cpuS: number; memB: number; poolB: number; outB: number } {
  const l = parseLayout(c.layout);
  const out = mkdtempSync(join(tmpdir(), 'athanor-planval-'));
  const root = projectRoot();
  const worker = join(root, 'dist', 'bench', 'plan-validate-worker.js');
  const args = ['--preset', c.preset, `--data.dir=${dataDir}`, `--train.steps=${steps}`, '--train.evalEvery=0', '--train.checkpointEvery=0',
    '--train.evalBatches=1', '--train.threads=1', `--train.outDir=${out}`, `--train.microBatch=${l.mb}`, `--train.gradAccum=${l.ga}`,
    `--train.recompute=${l.recompute === 'full'}`, `--parallel.dp=${l.dp}`, `--parallel.zero=${l.zero}`,
    `--parallel.tp=${l.tp}`, `--parallel.pp=${l.pp}`, `--parallel.ep=${l.ep}`, `--parallel.a2a=${l.a2a}`, `--parallel.sp=${l.sp}`,
    `--parallel.pipelineSchedule=${l.schedule}`, `--parallel.pipelineChunks=${l.vpp}`, `--train.precision=${l.precision}`,
    ...(l.offload === 'disk' ? ['--parallel.offload=disk', `--parallel.offloadDir=${join(out, 'offload')}`] : []),
    ...Object.entries(c.over ?? {}).map(([k, v]) => `--${k}=${v}`)];
  const world = devices(l);
  const cmd = world > 1
    ? [join(root, 'dist', 'src', 'cli', 'main.js'), 'launch', '--nproc-per-node', String(world), '--', 'node', '--expose-gc', worker, ...args]
    : ['--expose-gc', worker, ...args];
  const r = spawnSync(process.execPath, cmd, { encoding: 'utf8', env: { ...process.env, ATHANOR_QUIET: '1' }, timeout: 600_000 });
  // The run's final checkpoint is hundreds of MB and never read: remove it with the run.
  let metrics: string;
  try {
    if (r.status !== 0) throw new Error(`${c.preset} ${c.layout} failed:\n${(r.stdout + r.stderr).slice(-2000)}`);
    metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
  } finally { rmSync(out, { recursive: true, force: true }); }
  const recs = metrics.trim().split('\n').map((x) => JSON.parse(x) as Record<string, unknown>);
  // The first two steps are warm-up (first allocations; the buffer pool keeps a size once it recurs).
  const secs0 = recs.filter((x) => x.kind === 'step' && (x.step as number) > WARMUP).map((x) => x.seconds as number);
  const mem = [...r.stdout.matchAll(/ATHANOR_PLAN_MEASURED (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as { rank: number; arrayBufferPeak: number; poolAtPeak: number; poolLivePeak: number; cpuSteps: number[]; threadCpuPerStep?: Record<string, number>; sleptSteps?: number[]; runqSteps?: number[]; probeSteps?: number[]; noisePerStep?: Record<string, number> });
  // The main thread's sleep per step is waiting for communication or other ranks; its runqueue wait is the machine's load.
  const mean = (xs: number[] | undefined): string => (xs?.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(3) : '?');
  const nz = (m: { noisePerStep?: Record<string, number> }): string => { const n = m.noisePerStep; return n && Object.keys(n).length ? `; per step: ${n.migrations!.toFixed(1)} CPU migrations and ${n.involuntary!.toFixed(1)} preemptions of the main thread, ${n.minorFaults!.toFixed(0)} minor page faults, ${(1000 * n.stealS!).toFixed(1)} ms machine steal` : ''; };
  if (process.env.ATHANOR_PLANVAL_THREADS) for (const m of mem) console.log(`    rank ${m.rank} CPU-s/step by thread: ${Object.entries(m.threadCpuPerStep ?? {}).filter(([, v]) => v > 0.001).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}; main thread asleep ${mean(m.sleptSteps)} s/step, waiting for a core ${mean(m.runqSteps)} s/step; worker probes (forced GC, memory) ${mean(m.probeSteps)} s/step, taken off the wall step${nz(m)}`);
  // Each step's wall time less the worker's own probes in it (the forced step-boundary GC and
  // the memory probes: not the trainer's work), on rank 0, whose metrics these are.
  const probe = mem.find((m) => m.rank === 0)?.probeSteps ?? [];
  const secs = secs0.map((x, i) => x - (probe.length === secs0.length ? probe[i]! : 0));
  if (!secs.length || !mem.length || !mem[0]!.cpuSteps.length) throw new Error(`${c.preset} ${c.layout}: no measurements in the output`);
  return {
    // CPU time: the mean over the measured steps (each step does the same work; the load only
    // adds), of the busiest rank.
    stepS: median(secs), stepSpread: spread(secs), cpuS: Math.max(...mem.map((m) => m.cpuSteps.reduce((a, b) => a + b, 0) / m.cpuSteps.length)),
    memB: Math.max(...mem.map((m) => m.arrayBufferPeak)), poolB: Math.max(...mem.map((m) => m.poolLivePeak)),
    outB: Math.max(...mem.map((m) => m.arrayBufferPeak - m.poolAtPeak)),
  };
}

export async function runPlanValidate(o: { quick?: boolean; steps?: number; rounds?: number; cluster?: string; only?: string; calibrate?: boolean; calibrateEachRound?: boolean; log?: (s: string) => void } = {}): Promise<{ rows: ValidateRow[]; load: { before: number[]; after: number[] }; cpu: string }> {
  const log = o.log ?? console.log;
  const scratch: string[] = [];
  // Calibrate in the same invocation, so rates and runs see the same machine state.
  const calibrated = async (round: number): Promise<ReturnType<typeof loadCluster>> => {
    const file = join(mkdtempSync(join(tmpdir(), 'athanor-planval-cal-')), 'this-machine.json');
    scratch.push(dirname(file));
    const r = await calibrate({ out: file, quick: o.quick });
    for (const line of r.log) log(`  calibration${o.calibrateEachRound ? ` before round ${round + 1}` : ''}: ${line}`);
    return loadCluster(file);
  };
  let cluster = o.calibrate || o.calibrateEachRound ? await calibrated(0) : loadCluster(o.cluster ?? 'this-machine');
  const steps = o.steps ?? (o.quick ? 4 : 6);
  const rounds = o.rounds ?? (o.quick ? 1 : 2);
  // --only: substrings of "preset layout", '|'-separated (any one selects a case).
  const only = o.only?.split('|').filter(Boolean) ?? [];
  const cases = CASES.filter((c) => !only.length || only.some((x) => caseName(c).includes(x)));
  const dir = mkdtempSync(join(tmpdir(), 'athanor-planval-data-'));
  scratch.push(dir);
  const before = loadavg();
  const meas = new Map<Case, { stepS: number[]; stepSpread: number[]; cpuS: number[]; memB: number[]; poolB: number[]; outB: number[] }>();
  // The plan's estimate of each case (also sets its step count: short steps get more of them).
  const estimateCase = (c: Case): Estimate => {
    const model = configFromArgs({ preset: c.preset, ...c.over }).model;
    const l = parseLayout(c.layout);
    if (epLoads.has(c)) l.epLoad = epLoads.get(c)!;
    return estimate(traceForLayout(model, l, cluster.allocator), l, cluster, { seqLen: model.seqLen, dModel: model.dModel });
  };
  const epLoads = new Map<Case, number>();
  const ests = new Map(cases.map((c) => [c, estimateCase(c)] as const));
  // Every round's estimate of each case (one per calibration; one in all without --calibrate-each-round).
  const roundEsts = new Map<Case, Estimate[]>(cases.map((c) => [c, []]));
  const target = o.quick ? TARGET_MEASURED_S / 2 : TARGET_MEASURED_S;
  // Fixed per case from the first (balanced) estimate: the ep cases' routing load is measured over these steps.
  const stepCounts = new Map(cases.map((c) => [c, o.steps ?? Math.min(MAX_STEPS, Math.max(steps, WARMUP + Math.ceil(target / Math.max(1e-3, ests.get(c)!.time.step))))]));
  const stepsFor = (c: Case): number => stepCounts.get(c)!;
  // ep cases: the plan's routing load (epLoad), the run's routing reproduced by training its
  // global batch in one process (plan/ep-routing-load.ts; nothing timed, nothing read from
  // the runs). The estimates above (balanced) set the step counts; ep cases are re-estimated.
  try {
  data(dir);
  for (const c of cases) {
    const l = parseLayout(c.layout);
    if (l.ep <= 1 || l.epLoad !== undefined) continue;
    const cfg = configFromArgs({ preset: c.preset, ...c.over, 'data.dir': dir, 'train.microBatch': String(l.mb), 'train.gradAccum': String(l.ga) });
    const r = await epRoutingLoad(cfg, l.dp, l.ep, stepsFor(c));
    epLoads.set(c, r.peak);
    ests.set(c, estimateCase(c));
    log(`  routing load for ${caseName(c)}: busiest ep rank ${r.peak.toFixed(3)}× its balanced rows at the worst of ${r.forwards} forwards (mean ${r.mean.toFixed(3)}×), steps 1-${stepsFor(c)} trained in one process: the plan's epLoad`);
  }
  for (let round = 0; round < rounds; round++) {
    if (o.calibrateEachRound && round > 0) cluster = await calibrated(round);
    for (const c of cases) roundEsts.get(c)!.push(round === 0 ? ests.get(c)! : estimateCase(c));
    // Rotate the order each round so slow periods of the shared machine spread over the cases.
    const order = cases.map((_, i) => cases[(i + round) % cases.length]!);
    for (const c of order) {
      const m = measure(c, dir, stepsFor(c));
      const acc = meas.get(c) ?? { stepS: [], stepSpread: [], cpuS: [], memB: [], poolB: [], outB: [] };
      acc.stepS.push(m.stepS); acc.stepSpread.push(m.stepSpread); acc.cpuS.push(m.cpuS); acc.memB.push(m.memB); acc.poolB.push(m.poolB); acc.outB.push(m.outB);
      meas.set(c, acc);
      log(`  round ${round + 1}: ${caseName(c)}: predicted ${roundEsts.get(c)![round]!.time.step.toFixed(3)} s (this round's calibration); measured ${m.stepS.toFixed(3)} s/step over ${stepsFor(c) - WARMUP} steps (IQR ${(100 * m.stepSpread).toFixed(0)}%; ${m.cpuS.toFixed(3)} CPU-s), ${(m.memB / 2 ** 20).toFixed(0)} MiB (pool live peak ${(m.poolB / 2 ** 20).toFixed(0)} MiB; load ${loadavg()[0]!.toFixed(1)})`);
    }
  }
  } finally { for (const d of scratch) rmSync(d, { recursive: true, force: true }); }
  const after = loadavg();
  const rows: ValidateRow[] = [];
  for (const c of cases) {
    // The data here is a 2048-token vocabulary for both presets; the model keeps its own V.
    const l = parseLayout(c.layout);
    if (epLoads.has(c)) l.epLoad = epLoads.get(c)!;
    const es = roundEsts.get(c)!;
    const est = { time: { step: median(es.map((e) => e.time.step)), busy: median(es.map((e) => e.time.busy)) }, memory: { total: median(es.map((e) => e.memory.total)) } };
    const m = meas.get(c)!;
    const stepS = median(m.stepS), cpuS = median(m.cpuS), memB = median(m.memB);
    rows.push({
      preset: c.preset, layout: layoutString(l) + caseName(c).slice(`${c.preset} ${c.layout}`.length), predictedStepS: est.time.step, measuredStepS: stepS, stepError: est.time.step / stepS - 1,
      predictedBusyS: est.time.busy, measuredCpuS: cpuS, cpuError: est.time.busy / cpuS - 1, outsidePoolB: median(m.outB),
      predictedMemB: est.memory.total, measuredMemB: memB, memError: est.memory.total / memB - 1, poolLivePeakB: median(m.poolB),
      measuredSteps: stepsFor(c) - WARMUP, roundSpread: (Math.max(...m.stepS) - Math.min(...m.stepS)) / stepS, stepSpread: median(m.stepSpread),
    });
  }
  const cpu = `${cpus()[0]?.model ?? 'unknown'} × ${cpus().length}`;
  log(`\nmachine: ${cpu}; load ${before.map((v) => v.toFixed(2)).join('/')} before, ${after.map((v) => v.toFixed(2)).join('/')} after; cluster spec ${cluster.name}`);
  log('| preset | layout | step predicted | step measured (wall) | error | rounds spread | steps IQR | busy predicted | CPU-s per step | error | memory predicted | memory measured | error | outside pool |');
  log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  const pct = (x: number) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  for (const r of rows) log(`| ${r.preset} | ${r.layout} | ${r.predictedStepS.toFixed(3)} s | ${r.measuredStepS.toFixed(3)} s | ${pct(r.stepError)} | ${(100 * r.roundSpread).toFixed(0)}% | ${(100 * r.stepSpread).toFixed(0)}% (${r.measuredSteps}) | ${r.predictedBusyS.toFixed(3)} s | ${r.measuredCpuS.toFixed(3)} s | ${pct(r.cpuError)} | ${mib(r.predictedMemB)} | ${mib(r.measuredMemB)} | ${pct(r.memError)} | ${mib(r.outsidePoolB)} |`);
  return { rows, load: { before, after }, cpu };
}

if (process.argv[1] && /plan-validate-bench\.js$/.test(process.argv[1])) {
  const { flags } = parseArgs(process.argv.slice(2), ['quick', 'calibrate', 'calibrate-each-round']);
  runPlanValidate({ quick: 'quick' in flags, calibrate: 'calibrate' in flags, calibrateEachRound: 'calibrate-each-round' in flags, steps: flags.steps ? Number(flags.steps) : undefined, rounds: flags.rounds ? Number(flags.rounds) : undefined, cluster: flags.cluster, only: flags.only })
    .catch((e: unknown) => { console.error(e); process.exit(1); });
}
