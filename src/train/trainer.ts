// The GPT training loop: accumulation micro-steps, clipping, AdamW with warmup +
// cosine decay, NaN/Inf skipping, periodic evaluation and atomic checkpoints that
// resume bit-for-bit (weights, optimizer state, step, RNG and loader position).
// Parallelism plugs in through a ParallelLayer (parallel-layer.ts) and its StepSchedule
// (step-schedule.ts) without the loop knowing about ranks.
import { join } from 'node:path';
import { getPrecision, setPrecision, setLossScale } from '../backend/precision.js';
import { markWeightsUpdated } from '../backend/lowp-tensor.js';
import { DynamicLossScaler } from '../optim/loss-scaler.js';
import { precisionSummary } from './precision-info.js';
import { f32GemmMode, gemmChoices } from '../backend/gemm-select.js';
import { existsSync, readFileSync } from 'node:fs';
import { fromStorage } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { noGrad } from '../autograd/tape.js';
import { GPT } from '../nn/gpt.js';
import { gptFlopsPerToken, gptParamCount } from '../nn/gpt-config.js';
import { openIndexedDataset } from '../data/indexed-dataset-reader.js';
import { TokenLoader, type TokenLoaderState } from '../data/token-loader.js';
import { setBlasThreads, blasThreads } from '../backend/blas.js';
import { setKernelThreads } from '../backend/dispatch.js';
import { backendSummary } from '../backend/native.js';
import { type TrainConfig, validateTrainConfig, globalBatch } from './config.js';
import { Progress, fmtTime } from './progress.js';
import { measureGemmCeiling } from './gemm-ceiling.js';
import { lrAt } from './optim-setup.js';
import { latestCheckpoint, type TrainState } from './train-checkpoint.js';
import { moeCheckpointState, restoreMoeCheckpointState } from './moe-step.js';
import { singleProcessLayer, type ParallelLayer, type TrainModel } from './parallel-layer.js';
import { trackArrayBufferPeak, arrayBufferPeak } from '../core/array-buffer-peak.js';
import { sampleMemory, plannedMB } from './memory-sample.js';
import { pool } from '../core/buffer-pool.js';
import type { MicroBatch, StepSchedule } from './step-schedule.js';
import { moeAfterStep } from './moe-step.js';
import { checkMemoryFits, explainAllocationFailure, warmRuntime } from './memory-fit.js';

export interface TrainOptions {
  resume?: boolean;
  quiet?: boolean;
  /** The parallel layout (default: one process). */
  parallel?: ParallelLayer;
  /** Test hook: runs after backward, before clipping (e.g. to poison a gradient). */
  afterBackward?: (model: TrainModel, step: number) => void;
  /** Called after each optimizer step with the step's metrics. */
  onStep?: (m: { step: number; loss: number; skipped: boolean }) => void;
}

export interface TrainResult {
  steps: number;
  losses: number[];
  valLosses: { step: number; loss: number }[];
  skippedSteps: number[];
  tokensPerSec: number;
  model: TrainModel;
  stoppedEarly: 'target' | 'time' | null;
}

export function defaultThreads(localWorld: number): number {
  const cores = Number(process.env.ATHANOR_CORES ?? 0) || (globalThis.navigator?.hardwareConcurrency ?? 2);
  return Math.max(1, Math.floor(cores / Math.max(1, localWorld)));
}

/** Trains with cfg.train.precision in effect; the previous precision is restored after. */
export async function train(cfg: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const prevPrecision = getPrecision();
  try {
    return await trainWithPrecision(cfg, opts);
  } catch (e) {
    throw explainAllocationFailure(e, cfg);
  } finally {
    setPrecision(prevPrecision);
  }
}

async function trainWithPrecision(cfg: TrainConfig, opts: TrainOptions): Promise<TrainResult> {
  const par = opts.parallel ?? singleProcessLayer();
  trackArrayBufferPeak(); // the summary's measured peak of array-buffer bytes (weights, gradients, optimizer state, activations)
  validateTrainConfig(cfg, par.world);
  setPrecision(cfg.train.precision);
  const scaler = cfg.train.precision === 'fp16' ? new DynamicLossScaler({ initScale: cfg.train.lossScale, growthInterval: cfg.train.lossScaleWindow }) : null;
  const isMain = par.rank === 0;
  const threads = cfg.train.threads || defaultThreads(Number(process.env.ATHANOR_LOCAL_WORLD_SIZE ?? process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? 1));
  setBlasThreads(threads);
  setKernelThreads(threads);

  const { train: trainSrc, val: valSrc } = openData(cfg);
  const T = cfg.model.seqLen, B = cfg.train.microBatch;
  const loader = new TokenLoader(trainSrc, { T, seed: cfg.data.seed, rank: par.dataRank, worldSize: par.dataWorld });

  // Before anything large is allocated: refuse, naming parallel.offload, a run that cannot fit.
  await warmRuntime();
  checkMemoryFits(cfg, par.rank, Number(process.env.ATHANOR_LOCAL_WORLD_SIZE ?? process.env.OMPI_COMM_WORLD_LOCAL_SIZE ?? 1));
  const model = par.buildModel(cfg);
  const schedule = par.schedule(model, cfg);
  const optim = par.buildOptimizer(model, cfg);
  const progress = new Progress(cfg.train.steps, isMain ? join(cfg.train.outDir, 'metrics.jsonl') : null, { quiet: opts.quiet || !isMain });

  let step = 0;
  const ckptRoot = join(cfg.train.outDir, 'checkpoints');
  if (opts.resume) {
    const latest = latestCheckpoint(ckptRoot);
    if (latest) {
      const st = par.loadCheckpoint(latest, model, optim);
      markWeightsUpdated();
      if (scaler && st.lossScaler) scaler.restore(st.lossScaler);
      step = st.step;
      loader.restore(st.loader as TokenLoaderState);
      model.rng.setState(st.modelRng);
      if (model instanceof GPT) restoreMoeCheckpointState(model, st.moeBias, latest);
      if (isMain) progress.log(`resumed from ${latest} at step ${step}`);
    } else if (isMain) {
      progress.log(`--resume: no checkpoint under ${ckptRoot}; starting from step 0`);
    }
  }

  const nParams = model.numParameters();
  const planMB = isMain ? plannedMB(cfg) : undefined; // beside the measured memory on the progress line
  const tokensPerStep = globalBatch(cfg) * T;
  const flopsPerToken = 3 * gptFlopsPerToken(cfg.model, T);
  const ceiling = measureGemmCeiling(1024, 8, cfg.train.precision) * par.world;
  if (isMain) {
    const be = backendSummary();
    // Under tensor/pipeline parallelism a rank holds only part of the model.
    const closed = gptParamCount(cfg.model).toLocaleString('en-US');
    const count = par.world > 1 && nParams !== gptParamCount(cfg.model)
      ? `${nParams.toLocaleString('en-US')} parameters on rank 0 of ${closed} (closed form)`
      : `${nParams.toLocaleString('en-US')} parameters (closed form ${closed})`;
    progress.log(`athanor train: ${cfg.preset} ${count}, ` +
      `global batch ${globalBatch(cfg)} × ${T} tokens, ${par.world} rank(s) × ${blasThreads()} thread(s), ` +
      `kernels ${be.nativeKernels ? 'native' : 'reference'}, GEMM ${be.openblas ? 'OpenBLAS' : 'reference'} (ceiling ${(ceiling / 1e9).toFixed(1)} GFLOP/s)`);
    if (cfg.train.precision !== 'fp32') progress.log(precisionSummary(cfg.train.precision));
    const layout = par.describe();
    if (layout) progress.log(layout);
    progress.record('config', { config: cfg, params: nParams, world: par.world, threads, layout: layout ?? undefined });
  }

  const losses: number[] = [];
  const valLosses: { step: number; loss: number }[] = [];
  const skipped: number[] = [];
  let badInARow = 0;
  let stoppedEarly: TrainResult['stoppedEarly'] = null;
  const t0 = performance.now();
  const startStep = step;

  while (step < cfg.train.steps) {
    const ts = performance.now();
    if (scaler) setLossScale(scaler.scale);
    const stepScale = scaler?.scale;
    const micro: MicroBatch[] = [];
    for (let i = 0; i < cfg.train.gradAccum; i++) {
      const batch = loader.next(B);
      micro.push({ x: batch.x, y: batch.y, rows: B, T });
    }
    const loss = await schedule.runStep(micro);
    opts.afterBackward?.(model, step + 1);
    await par.reduceGrads();
    step++;
    const lr = lrAt(cfg.optim, step - 1, cfg.train.steps);
    const { gradNorm, applied } = await optim.step(lr, cfg.optim.gradClip);
    const bad = !applied || !Number.isFinite(loss);
    // fp16: an overflow in the scaled gradients is the loss scale's business, not a failed step.
    const overflow = scaler !== null && !applied && Number.isFinite(loss) && scaler.canBackOff();
    if (scaler) scaler.update(!applied);
    if (overflow) {
      skipped.push(step);
      progress.log(`step ${step}: fp16 gradient overflow at loss scale ${stepScale}; update skipped, loss scale → ${scaler!.scale}`);
    } else if (bad) {
      skipped.push(step);
      badInARow++;
      progress.log(`step ${step}: non-finite ${Number.isFinite(loss) ? `gradient norm (${gradNorm})` : `loss (${loss})`}; update skipped (${badInARow} in a row)`);
      if (badInARow >= cfg.train.maxBadSteps) {
        throw new Error(`training stopped: ${badInARow} consecutive steps with non-finite loss or gradients (train.maxBadSteps = ${cfg.train.maxBadSteps}); last good checkpoint is under ${ckptRoot}`);
      }
    } else {
      badInARow = 0;
    }
    losses.push(loss);
    pool.endStep();
    // Routing statistics: on a whole GPT here; a layout holding some of the layers (pipeline) gathers them itself.
    const moe = par.moeAfterStep ? await par.moeAfterStep(model) : model instanceof GPT ? await moeAfterStep(model, par.dataWorld, (x) => par.meanScalar(x), undefined, par.sumCounts ? (v) => par.sumCounts!(v) : undefined) : null;
    opts.onStep?.({ step, loss, skipped: bad });
    const dt = (performance.now() - ts) / 1000;
    const tps = tokensPerStep / dt;
    progress.step({ step, loss, lr, tokensPerSec: tps, mfu: (tps * flopsPerToken) / ceiling, gradNorm, seconds: dt, skipped: bad, ...(scaler ? { lossScale: stepScale } : {}), ...bubbleOf(schedule), ...(moe ? { moe } : {}), ...(isMain && (step % cfg.train.logEvery === 0 || step === cfg.train.steps) ? { mem: sampleMemory(planMB) } : {}) }, cfg.train.logEvery, startStep);

    const elapsed = (performance.now() - t0) / 1000;
    const timeUp = cfg.train.maxSeconds > 0 && elapsed >= cfg.train.maxSeconds;
    const last = step === cfg.train.steps || timeUp;
    if ((cfg.train.evalEvery > 0 && step % cfg.train.evalEvery === 0) || last) {
      const vl = await evaluateWith(schedule, valSrc, cfg, par.dataRank, par.dataWorld);
      valLosses.push({ step, loss: vl });
      progress.record('eval', { step, valLoss: vl });
      if (isMain) progress.log(`step ${step}: validation loss ${vl.toFixed(4)} (elapsed ${fmtTime(elapsed)})`);
      if (cfg.train.targetLoss > 0 && vl <= cfg.train.targetLoss) stoppedEarly = 'target';
    }
    if (timeUp && !stoppedEarly) stoppedEarly = 'time';
    if ((cfg.train.checkpointEvery > 0 && step % cfg.train.checkpointEvery === 0) || last || stoppedEarly) {
      const st: TrainState = { step, loader: loader.state(), modelRng: model.rng.getState(), config: cfg, ...(scaler ? { lossScaler: scaler.state() } : {}) };
      const moeBias = model instanceof GPT ? moeCheckpointState(model) : null;
      if (moeBias) st.moeBias = moeBias;
      const dir = await par.saveCheckpoint(ckptRoot, model, optim, st);
      if (isMain) progress.log(`step ${step}: checkpoint ${dir}`);
    }
    if (stoppedEarly) break;
  }
  progress.end();
  if (isMain && f32GemmMode() === 'auto') progress.record('gemm-choices', { choices: gemmChoices() });
  const seconds = (performance.now() - t0) / 1000;
  const tokensPerSec = ((step - startStep) * tokensPerStep) / Math.max(seconds, 1e-9);
  if (isMain) progress.record('summary', { steps: step, seconds, tokensPerSec, stoppedEarly, maxRssMB: process.resourceUsage().maxRSS / 1024, peakArrayBuffersMB: arrayBufferPeak() / 2 ** 20, ...(planMB !== undefined ? { planMB } : {}) });
  return { steps: step, losses, valLosses, skippedSteps: skipped, tokensPerSec, model, stoppedEarly };
}

function openData(cfg: TrainConfig) {
  const dir = cfg.data.dir;
  if (!existsSync(dir)) throw new Error(`data.dir '${dir}' does not exist (run \`athanor prepare\` first, or pass --data.dir)`);
  const prefix = (n: string) => join(dir, n);
  for (const n of ['train', 'val']) {
    for (const ext of ['.bin', '.idx']) {
      if (!existsSync(prefix(n) + ext)) throw new Error(`data.dir '${dir}': missing ${n}${ext} (expected the output of \`athanor prepare\`)`);
    }
  }
  const metaPath = join(dir, 'meta.json');
  if (existsSync(metaPath)) {
    const meta = JSON.parse(readFileSync(metaPath, 'utf8')) as { tokenizer?: { vocabSize?: number } };
    const v = meta.tokenizer?.vocabSize ?? 0;
    if (v > cfg.model.vocabSize) throw new Error(`${metaPath}: the tokenizer has ${v} tokens but model.vocabSize is ${cfg.model.vocabSize}; pass --model.vocabSize=${v} or larger`);
  }
  return { train: openIndexedDataset(prefix('train')), val: openIndexedDataset(prefix('val')) };
}

/**
 * Mean validation loss through a step schedule: the same global batches whatever the
 * layout (each data-parallel replica takes its rows of every global batch).
 */
export async function evaluateWith(schedule: StepSchedule, src: ReturnType<typeof openIndexedDataset>, cfg: TrainConfig, rank = 0, world = 1): Promise<number> {
  const T = cfg.model.seqLen, B = cfg.train.microBatch;
  const loader = new TokenLoader(src, { T, seed: 0, shuffle: false, rank, worldSize: world });
  const n = Math.min(cfg.train.evalBatches, Math.max(1, Math.floor(loader.numWindows / (B * world))));
  const rows = Math.max(1, Math.min(B, Math.floor(loader.numWindows / world)));
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const b = loader.next(rows);
    sum += await schedule.evalLoss({ x: b.x, y: b.y, rows, T });
  }
  return sum / n;
}

/** Mean validation loss over the first `evalBatches` sequential batches (same batches every time). */
export function evaluate(model: GPT, src: ReturnType<typeof openIndexedDataset>, cfg: TrainConfig, rank = 0, world = 1): number {
  // The same global validation batches whatever the data-parallel layout: each rank
  // takes its B rows of every global batch of B × world.
  const T = cfg.model.seqLen, B = cfg.train.microBatch;
  const loader = new TokenLoader(src, { T, seed: 0, shuffle: false, rank, worldSize: world });
  const n = Math.min(cfg.train.evalBatches, Math.max(1, Math.floor(loader.numWindows / (B * world))));
  const rows = Math.max(1, Math.min(B, Math.floor(loader.numWindows / world)));
  let sum = 0;
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      for (let i = 0; i < n; i++) {
        const b = loader.next(rows);
        sum += scope(() => model.loss(fromStorage(b.x, [rows, T], 'int32'), fromStorage(b.y, [rows, T], 'int32')).item());
      }
    });
  } finally {
    model.train(wasTraining);
  }
  return sum / n;
}

function bubbleOf(schedule: StepSchedule): { bubble?: number; bubbleTheory?: number } {
  const s = schedule.stats?.();
  return s ? { bubble: s.bubble, bubbleTheory: s.bubbleTheory } : {};
}
