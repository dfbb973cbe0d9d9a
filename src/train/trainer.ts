// The GPT training loop: accumulation micro-steps, clipping, AdamW with warmup +
// cosine decay, NaN/Inf skipping, periodic evaluation and atomic checkpoints that
// resume bit-for-bit (weights, optimizer state, step, RNG and loader position).
// Data parallelism plugs in through `GradSync` without the loop knowing about ranks.
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { fromStorage, full, type Tensor } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { backward, noGrad } from '../autograd/tape.js';
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
import { buildOptimizer, lrAt, type TrainOptimizer } from './optim-setup.js';
import { saveTrainCheckpoint, loadTrainCheckpoint, latestCheckpoint, type TrainState } from './train-checkpoint.js';
import { moeAfterStep } from './moe-step.js';

/** Gradient synchronisation for data parallelism; the single-process default does nothing. */
export interface GradSync {
  rank: number;
  world: number;
  /** Called by backward as each parameter's gradient becomes final (bucketed allreduce starts here). */
  onGradReady?: (p: Tensor) => void;
  /** Waits for all gradient reductions of this step (gradients are then averaged over ranks). */
  finish(): Promise<void>;
  /** Mean of a scalar over ranks (losses, eval). */
  meanScalar(x: number): Promise<number>;
  barrier(): Promise<void>;
  /** Builds the optimizer (ZeRO shards its state); default: full AdamW on every rank. */
  buildOptimizer?: (model: GPT, cfg: TrainConfig) => TrainOptimizer;
  /** Collective checkpoint save (each rank writes what it owns). */
  saveCheckpoint?: (root: string, model: GPT, optim: TrainOptimizer, st: TrainState) => Promise<string>;
  /** Collective checkpoint load. */
  loadCheckpoint?: (dir: string, model: GPT, optim: TrainOptimizer) => TrainState;
  /**
   * Runs before each micro-batch forward (e.g. ZeRO-3 gathers the embedding/head
   * parameters); `lastMicro` says whether gradients are reduced after this micro-batch.
   */
  beforeForward?: (lastMicro: boolean) => void;
  /** Runs after an evaluation pass (ZeRO-3 releases what beforeForward gathered). */
  afterEval?: () => void;
  /** One line describing the parallel layout and its memory per rank. */
  describe?: () => string;
  /** Prepares the model after construction (e.g. ZeRO-3 parameter sharding). */
  setupModel?: (model: GPT) => void;
}

export const singleProcess: GradSync = {
  rank: 0,
  world: 1,
  finish: async () => undefined,
  meanScalar: async (x) => x,
  barrier: async () => undefined,
};

export interface TrainOptions {
  resume?: boolean;
  quiet?: boolean;
  sync?: GradSync;
  /** Test hook: runs after backward, before clipping (e.g. to poison a gradient). */
  afterBackward?: (model: GPT, step: number) => void;
  /** Called after each optimizer step with the step's metrics. */
  onStep?: (m: { step: number; loss: number; skipped: boolean }) => void;
}

export interface TrainResult {
  steps: number;
  losses: number[];
  valLosses: { step: number; loss: number }[];
  skippedSteps: number[];
  tokensPerSec: number;
  model: GPT;
  stoppedEarly: 'target' | 'time' | null;
}

export function defaultThreads(localWorld: number): number {
  const cores = Number(process.env.ATHANOR_CORES ?? 0) || (globalThis.navigator?.hardwareConcurrency ?? 2);
  return Math.max(1, Math.floor(cores / Math.max(1, localWorld)));
}

export async function train(cfg: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const sync = opts.sync ?? singleProcess;
  validateTrainConfig(cfg, sync.world);
  const isMain = sync.rank === 0;
  const threads = cfg.train.threads || defaultThreads(Number(process.env.ATHANOR_LOCAL_WORLD_SIZE ?? 1));
  setBlasThreads(threads);
  setKernelThreads(threads);

  const { train: trainSrc, val: valSrc } = openData(cfg);
  const T = cfg.model.seqLen, B = cfg.train.microBatch;
  const loader = new TokenLoader(trainSrc, { T, seed: cfg.data.seed, rank: sync.rank, worldSize: sync.world });

  const model = new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute });
  sync.setupModel?.(model);
  const optim = sync.buildOptimizer ? sync.buildOptimizer(model, cfg) : buildOptimizer(model, cfg);
  const progress = new Progress(cfg.train.steps, isMain ? join(cfg.train.outDir, 'metrics.jsonl') : null, { quiet: opts.quiet || !isMain });

  let step = 0;
  const ckptRoot = join(cfg.train.outDir, 'checkpoints');
  if (opts.resume) {
    const latest = latestCheckpoint(ckptRoot);
    if (latest) {
      const st = sync.loadCheckpoint ? sync.loadCheckpoint(latest, model, optim) : loadTrainCheckpoint(latest, model, optim);
      step = st.step;
      loader.restore(st.loader as TokenLoaderState);
      model.rng.setState(st.modelRng);
      if (isMain) progress.log(`resumed from ${latest} at step ${step}`);
    } else if (isMain) {
      progress.log(`--resume: no checkpoint under ${ckptRoot}; starting from step 0`);
    }
  }

  const nParams = model.numParameters();
  const tokensPerStep = globalBatch(cfg) * T;
  const flopsPerToken = 3 * gptFlopsPerToken(cfg.model, T);
  const ceiling = measureGemmCeiling() * sync.world;
  if (isMain) {
    const be = backendSummary();
    progress.log(`athanor train: ${cfg.preset} ${nParams.toLocaleString('en-US')} parameters (closed form ${gptParamCount(cfg.model).toLocaleString('en-US')}), ` +
      `global batch ${globalBatch(cfg)} × ${T} tokens, ${sync.world} rank(s) × ${blasThreads()} thread(s), ` +
      `kernels ${be.nativeKernels ? 'native' : 'reference'}, GEMM ${be.openblas ? 'OpenBLAS' : 'reference'} (ceiling ${(ceiling / 1e9).toFixed(1)} GFLOP/s)`);
    if (sync.describe) progress.log(sync.describe());
    progress.record('config', { config: cfg, params: nParams, world: sync.world, threads, layout: sync.describe?.() });
  }

  const losses: number[] = [];
  const valLosses: { step: number; loss: number }[] = [];
  const skipped: number[] = [];
  let badInARow = 0;
  let stoppedEarly: TrainResult['stoppedEarly'] = null;
  const t0 = performance.now();
  const startStep = step;
  const accScale = 1 / cfg.train.gradAccum;

  while (step < cfg.train.steps) {
    const ts = performance.now();
    let lossSum = 0;
    for (let micro = 0; micro < cfg.train.gradAccum; micro++) {
      const batch = loader.next(B);
      sync.beforeForward?.(micro === cfg.train.gradAccum - 1);
      lossSum += scope(() => {
        const x = fromStorage(batch.x, [B, T], 'int32');
        const y = fromStorage(batch.y, [B, T], 'int32');
        const loss = model.loss(x, y);
        const last = micro === cfg.train.gradAccum - 1;
        backward(loss, { grad: full([], accScale), onLeafGradReady: last ? sync.onGradReady : undefined });
        return loss.item();
      });
    }
    opts.afterBackward?.(model, step + 1);
    await sync.finish();
    step++;
    const lr = lrAt(cfg.optim, step - 1, cfg.train.steps);
    const loss = await sync.meanScalar(lossSum / cfg.train.gradAccum);
    const { gradNorm, applied } = await optim.step(lr, cfg.optim.gradClip);
    const bad = !applied || !Number.isFinite(loss);
    if (bad) {
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
    const moe = await moeAfterStep(model, sync.world, sync.meanScalar);
    opts.onStep?.({ step, loss, skipped: bad });
    const dt = (performance.now() - ts) / 1000;
    const tps = tokensPerStep / dt;
    progress.step({ step, loss, lr, tokensPerSec: tps, mfu: (tps * flopsPerToken) / ceiling, gradNorm, seconds: dt, skipped: bad, ...(moe ? { moe } : {}) }, cfg.train.logEvery, startStep);

    const elapsed = (performance.now() - t0) / 1000;
    const timeUp = cfg.train.maxSeconds > 0 && elapsed >= cfg.train.maxSeconds;
    const last = step === cfg.train.steps || timeUp;
    if ((cfg.train.evalEvery > 0 && step % cfg.train.evalEvery === 0) || last) {
      sync.beforeForward?.(false);
      const local = evaluate(model, valSrc, cfg, sync.rank, sync.world);
      sync.afterEval?.();
      const vl = await sync.meanScalar(local);
      valLosses.push({ step, loss: vl });
      progress.record('eval', { step, valLoss: vl });
      if (isMain) progress.log(`step ${step}: validation loss ${vl.toFixed(4)} (elapsed ${fmtTime(elapsed)})`);
      if (cfg.train.targetLoss > 0 && vl <= cfg.train.targetLoss) stoppedEarly = 'target';
    }
    if (timeUp && !stoppedEarly) stoppedEarly = 'time';
    if ((cfg.train.checkpointEvery > 0 && step % cfg.train.checkpointEvery === 0) || last || stoppedEarly) {
      const st: TrainState = { step, loader: loader.state(), modelRng: model.rng.getState(), config: cfg };
      const dir = sync.saveCheckpoint ? await sync.saveCheckpoint(ckptRoot, model, optim, st) : await saveTrainCheckpoint(ckptRoot, model, optim, st);
      if (isMain) progress.log(`step ${step}: checkpoint ${dir}`);
    }
    if (stoppedEarly) break;
  }
  progress.end();
  const seconds = (performance.now() - t0) / 1000;
  const tokensPerSec = ((step - startStep) * tokensPerStep) / Math.max(seconds, 1e-9);
  if (isMain) progress.record('summary', { steps: step, seconds, tokensPerSec, stoppedEarly, maxRssMB: process.resourceUsage().maxRSS / 1024 });
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
