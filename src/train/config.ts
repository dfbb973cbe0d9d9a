// Typed training configurations. A preset is a factory function returning a full
// TrainConfig; the CLI applies dotted overrides (`--model.nLayer=6`) on top and
// validates the result once, with messages naming the offending key.
import type { GptConfig } from '../nn/gpt-config.js';
import { validateGptConfig } from '../nn/gpt-config.js';
import type { PipelineScheduleKind } from '../parallel/pipeline/schedule.js';
import { validatePipeline } from '../parallel/pipeline/pipeline-setup.js';
import { denseMoe, moeEnabled, type MoeConfig } from '../nn/moe-config.js';
import { validateGptTensorParallel } from '../parallel/plans/gpt.js';
import { parseMeshOrder } from '../parallel/mesh.js';
import { validateFullyShard } from '../parallel/hsdp.js';
import { PRECISIONS, type Precision } from '../backend/precision.js';
import { validateOffload } from '../parallel/offload-config.js';

export interface OptimConfig {
  lr: number;
  minLr: number;
  warmupSteps: number;
  schedule: 'cosine' | 'linear' | 'constant';
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradClip: number;
}

export interface ParallelConfig {
  dp: number;
  tp: number;
  pp: number;
  ep: number;
  /** ZeRO stage: 0 (plain DP), 1 (optimizer state), 2 (+ gradients), 3 (+ parameters). */
  zero: 0 | 1 | 2 | 3;
  bucketMB: number;
  /** Fixed reduction order so results do not depend on arrival timing. */
  deterministic: boolean;
  /** Expert-parallel all-to-all: flat, or hierarchical (inside each node first, then across nodes). */
  a2a: 'flat' | 'hierarchical';
  /** Chunks (virtual stages) per pipeline rank for the interleaved schedule; micro-batches per step are train.gradAccum. */
  pipelineChunks: number;
  /** Pipeline schedule when pp > 1. */
  pipelineSchedule: PipelineScheduleKind;
  /** Sequence parallelism inside tensor-parallel groups (norm/dropout/residual regions split along the sequence). */
  sp: boolean;
  /** Mesh rank order, fastest-varying first: "tp,dp,pp" puts a tensor-parallel group on neighbouring ranks (one node). */
  order: string;
  /** HSDP (zero=3 only): shard parameters, gradients and optimizer state within groups of this many data-parallel ranks and replicate across the dp/shardGroup groups; 0 = the whole dp group. */
  shardGroup: number;
  /** ZeRO-Infinity style: 'disk' keeps fp32 master weights and AdamW moments of the rank's shard in a file under offloadDir. */
  offload: 'none' | 'disk';
  /** Directory of the per-rank offload files (required with offload=disk). */
  offloadDir: string;
  /** Data-parallel gradient all-reduce / reduce-scatter in fp32, or in bf16 (half the bytes; summed in fp32, rounded once). */
  gradDtype: 'fp32' | 'bf16';
}

export interface TrainConfig {
  preset: string;
  model: GptConfig;
  data: {
    /** Directory written by `athanor prepare` (train.bin/.idx, val.bin/.idx, tokenizer.json). */
    dir: string;
    seed: number;
  };
  train: {
    /** Sequences per rank per micro-step. */
    microBatch: number;
    gradAccum: number;
    steps: number;
    evalEvery: number;
    evalBatches: number;
    checkpointEvery: number;
    logEvery: number;
    outDir: string;
    seed: number;
    recompute: boolean;
    /** Consecutive non-finite steps tolerated before the run stops. */
    maxBadSteps: number;
    /** Stop early once validation loss is at or below this (0 = never). */
    targetLoss: number;
    /** OpenBLAS + kernel threads per rank (0 = all cores / ranks on this host). */
    threads: number;
    /** Stop after this many seconds of training (0 = no limit). */
    maxSeconds: number;
    /** GEMM precision: fp32, or bf16 / fp16 operands with fp32 accumulation (fp32 master weights). */
    precision: Precision;
    /** fp16: initial dynamic loss scale. */
    lossScale: number;
    /** fp16: overflow-free steps after which the loss scale doubles. */
    lossScaleWindow: number;
  };
  optim: OptimConfig;
  parallel: ParallelConfig;
}

function base(preset: string, model: GptConfig, microBatch: number): TrainConfig {
  return {
    preset,
    model,
    data: { dir: 'runs/data/demo', seed: 1234 },
    train: {
      microBatch, gradAccum: 1, steps: 1000, evalEvery: 100, evalBatches: 20, checkpointEvery: 200, logEvery: 10,
      outDir: `runs/${preset}`, seed: 1337, recompute: false, maxBadSteps: 5, targetLoss: 0, threads: 0, maxSeconds: 0,
      precision: 'fp32', lossScale: 65536, lossScaleWindow: 1000,
    },
    optim: { lr: 3e-4, minLr: 3e-5, warmupSteps: 100, schedule: 'cosine', weightDecay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradClip: 1.0 },
    parallel: { dp: 1, tp: 1, pp: 1, ep: 1, zero: 0, bucketMB: 25, deterministic: true, a2a: 'flat', pipelineChunks: 2, pipelineSchedule: '1f1b', sp: false, order: 'tp,dp,pp', shardGroup: 0, offload: 'none', offloadDir: '', gradDtype: 'fp32' },
  };
}

const gpt = (nLayer: number, nHead: number, dModel: number, vocabSize: number, seqLen: number, extra: Partial<GptConfig> = {}): GptConfig => ({
  nLayer, nHead, dModel, dFF: 4 * dModel, vocabSize, seqLen, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5, moe: denseMoe(), ...extra,
});

/** The demo: trains in minutes on 2 cores. */
export function gptTiny(): TrainConfig {
  const c = base('gpt-tiny', gpt(4, 4, 128, 2048, 128), 16);
  c.train = { ...c.train, steps: 700, evalEvery: 100, evalBatches: 16, checkpointEvery: 100, logEvery: 20, maxSeconds: 0, targetLoss: 0 };
  c.optim = { ...c.optim, lr: 2e-3, minLr: 2e-4, warmupSteps: 60, weightDecay: 0.1 };
  return c;
}

/** 4 layers, 8 heads, d 512, ff 2048, V 8192, T 256, B 8, untied: 21,130,240 parameters. */
export function gptSmall(): TrainConfig {
  const c = base('gpt-small', gpt(4, 8, 512, 8192, 256), 8);
  c.optim = { ...c.optim, lr: 6e-4, minLr: 6e-5 };
  return c;
}

export function gpt2_124m(): TrainConfig {
  const c = base('gpt2-124m', gpt(12, 12, 768, 50257, 1024, { tieEmbeddings: true }), 8);
  c.optim = { ...c.optim, lr: 6e-4, minLr: 6e-5, warmupSteps: 700 };
  return c;
}

/** Yuan 1.0 4.7B shape used in ASC22: 40 layers, hidden 3072, 24 heads, seq 2048, vocab 53,248. */
export function yuan4_7b(): TrainConfig {
  const c = base('yuan-4.7b', gpt(40, 24, 3072, 53248, 2048), 1);
  c.train = { ...c.train, recompute: true };
  c.optim = { ...c.optim, lr: 1.6e-4, minLr: 1.6e-5, warmupSteps: 2000 };
  return c;
}

/**
 * Fugaku-LLM 13B (GPT-2 architecture): 40 layers, hidden 5184, 36 heads, ff 20736, seq 2048,
 * vocab 49,152, in its published layout on 13,824 nodes: TP 6 × PP 8 × DP 288, micro-batch 1,
 * global batch 2016 (= 1 × 7 accumulation steps × 288 replicas).
 */
export function fugaku13b(): TrainConfig {
  const c = base('fugaku-13b', gpt(40, 36, 5184, 49152, 2048), 1);
  c.train = { ...c.train, recompute: true, gradAccum: 7 };
  c.optim = { ...c.optim, lr: 1e-4, minLr: 1e-5, warmupSteps: 2000 };
  // 7 micro-batches per replica for 8 stages: fewer than 1F1B needs, so the pipeline runs GPipe.
  c.parallel = { ...c.parallel, tp: 6, pp: 8, dp: 288, pipelineSchedule: 'gpipe' };
  return c;
}

const moe = (over: Partial<MoeConfig>): MoeConfig => ({ ...denseMoe(), ...over });

/**
 * gpt-tiny with 8 experts, top-2, in every second block; expert width F/2, so a token's
 * active MLP compute equals gpt-tiny's dense MLP (the quality comparison of issue 9).
 */
export function moeTiny(): TrainConfig {
  const c = gptTiny();
  c.preset = 'moe-tiny';
  c.train.outDir = 'runs/moe-tiny';
  c.model.moe = moe({ experts: 8, topK: 2, every: 2, dFF: 256, capacityFactor: 0, balance: 'aux' });
  return c;
}

/** gpt-small with 8 experts, top-2, every second block, expert width 1024, capacity factor 1.25. */
export function moeSmall(): TrainConfig {
  const c = gptSmall();
  c.preset = 'moe-small';
  c.train.outDir = 'runs/moe-small';
  c.model.moe = moe({ experts: 8, topK: 2, every: 2, dFF: 1024, capacityFactor: 1.25, balance: 'aux' });
  return c;
}

export const PRESETS: Record<string, () => TrainConfig> = {
  'gpt-tiny': gptTiny,
  'gpt-small': gptSmall,
  'gpt2-124m': gpt2_124m,
  'yuan-4.7b': yuan4_7b,
  'fugaku-13b': fugaku13b,
  'moe-tiny': moeTiny,
  'moe-small': moeSmall,
};

export function presetConfig(name: string): TrainConfig {
  const f = PRESETS[name];
  if (!f) throw new Error(`unknown preset '${name}' (available: ${Object.keys(PRESETS).join(', ')})`);
  return f();
}

export function globalBatch(c: TrainConfig): number {
  return c.train.microBatch * c.train.gradAccum * c.parallel.dp;
}

/** Checks every invariant once, so a bad run fails at start rather than at step 10,000. */
export function validateTrainConfig(c: TrainConfig, world = 1): void {
  validateGptConfig(c.model, 'model');
  const posInt = (v: number, k: string) => { if (!Number.isInteger(v) || v <= 0) throw new Error(`${k} must be a positive integer, got ${v}`); };
  posInt(c.train.microBatch, 'train.microBatch');
  posInt(c.train.gradAccum, 'train.gradAccum');
  posInt(c.train.steps, 'train.steps');
  for (const k of ['dp', 'tp', 'pp', 'ep'] as const) posInt(c.parallel[k], `parallel.${k}`);
  if (![0, 1, 2, 3].includes(c.parallel.zero)) throw new Error(`parallel.zero must be 0, 1, 2 or 3, got ${c.parallel.zero}`);
  if (c.parallel.gradDtype !== 'fp32' && c.parallel.gradDtype !== 'bf16') throw new Error(`parallel.gradDtype must be fp32 or bf16, got '${c.parallel.gradDtype}'`);
  if (c.parallel.gradDtype === 'bf16' && c.parallel.ep > 1) throw new Error('parallel.gradDtype=bf16 is not wired into expert parallelism (parallel.ep > 1); use parallel.gradDtype=fp32 there');
  const prod = c.parallel.dp * c.parallel.tp * c.parallel.pp;
  if (prod !== world) {
    throw new Error(`parallel.dp × parallel.tp × parallel.pp = ${c.parallel.dp} × ${c.parallel.tp} × ${c.parallel.pp} = ${prod}, but the world size is ${world}`);
  }
  if (c.parallel.tp > 1 && c.model.nHead % c.parallel.tp !== 0) throw new Error(`model.nHead (${c.model.nHead}) must be divisible by parallel.tp (${c.parallel.tp})`);
  validateGptTensorParallel(c.model, c.parallel.tp, c.parallel.sp);
  parseMeshOrder(c.parallel.order, 'parallel.order');
  if (c.parallel.sp && c.parallel.tp === 1) throw new Error('parallel.sp=true needs parallel.tp > 1 (sequence parallelism splits the sequence over the tensor-parallel group)');
  if (c.parallel.pp > 1 && c.model.nLayer < c.parallel.pp) throw new Error(`model.nLayer (${c.model.nLayer}) must be at least parallel.pp (${c.parallel.pp})`);
  validatePipeline(c.model, { pp: c.parallel.pp, schedule: c.parallel.pipelineSchedule, chunks: c.parallel.pipelineChunks, microBatches: c.train.gradAccum }, c.parallel.zero);
  if (!(c.optim.lr > 0)) throw new Error(`optim.lr must be > 0, got ${c.optim.lr}`);
  if (c.optim.minLr < 0 || c.optim.minLr > c.optim.lr) throw new Error(`optim.minLr must be in [0, optim.lr], got ${c.optim.minLr}`);
  if (!['cosine', 'linear', 'constant'].includes(c.optim.schedule)) throw new Error(`optim.schedule must be cosine, linear or constant, got '${c.optim.schedule}'`);
  if (c.train.maxBadSteps < 1) throw new Error(`train.maxBadSteps must be >= 1`);
  if (!PRECISIONS.includes(c.train.precision)) throw new Error(`train.precision must be one of ${PRECISIONS.join(', ')}, got '${c.train.precision}'`);
  if (!(c.train.lossScale > 0) || !Number.isFinite(c.train.lossScale)) throw new Error(`train.lossScale must be a positive finite number, got ${c.train.lossScale}`);
  posInt(c.train.lossScaleWindow, 'train.lossScaleWindow');
  if (moeEnabled(c.model.moe)) {
    if (c.parallel.zero === 3) throw new Error('parallel.zero = 3 does not support MoE models (model.moe.experts > 0): ZeRO-3 recomputes blocks, which would route tokens twice');
    if (c.parallel.tp > 1 && c.parallel.ep > 1) throw new Error(`parallel.ep = ${c.parallel.ep} with parallel.tp = ${c.parallel.tp} is not supported: expert parallelism runs over the data-parallel ranks of an untensor-split model; with parallel.tp > 1 use parallel.ep = 1 (MoE × tp × dp × pp does compose)`);
  }
  if (c.parallel.ep > 1 && c.parallel.dp % c.parallel.ep !== 0) {
    throw new Error(`parallel.ep (${c.parallel.ep}) must divide parallel.dp (${c.parallel.dp}): expert parallelism borrows its ranks from the data-parallel group (dp = ep × expert-data-parallel)`);
  }
  validateFullyShard(c.parallel);
  validateOffload(c.parallel);
  if (c.parallel.a2a !== 'flat' && c.parallel.a2a !== 'hierarchical') throw new Error(`parallel.a2a must be flat or hierarchical, got '${c.parallel.a2a}'`);
  if (c.parallel.ep > 1 && (!moeEnabled(c.model.moe) || c.model.moe.experts % c.parallel.ep !== 0)) {
    throw new Error(`parallel.ep (${c.parallel.ep}) must divide model.moe.experts (${c.model.moe?.experts ?? 0})`);
  }
}
