// The trainer's optimizer: AdamW over two groups (decay on matrices and embeddings,
// none on biases and norms, as GPT-2/nanoGPT), global-norm clipping folded into the
// AdamW kernel as a gradient scale, and a skip when the norm is not finite.
import type { Tensor } from '../core/tensor.js';
import type { Module } from '../nn/module.js';
import { AdamW, gradNorm, clipCoefficient, lrAt as scheduleLr, type ParamLike } from '../optim/index.js';
import type { OptimConfig, TrainConfig } from './config.js';

export interface StepResult {
  gradNorm: number;
  applied: boolean;
}

export interface TrainOptimizer {
  readonly adamw: AdamW;
  /** Clips, updates (unless the norm is non-finite) and zeroes gradients. */
  step(lr: number, maxNorm: number): StepResult | Promise<StepResult>;
  zeroGrad(): void;
}

/** Gives each parameter its dotted name (optimizer state and checkpoints are keyed by it). */
export function nameParameters(model: Module): [string, Tensor][] {
  const named = model.namedParameters();
  for (const [n, p] of named) p.name = n;
  return named;
}

export function adamwGroups(params: readonly ParamLike[], cfg: OptimConfig) {
  const dims = (p: ParamLike) => ('param' in p ? p.param : p).ndim;
  return [
    { params: params.filter((p) => dims(p) >= 2), weightDecay: cfg.weightDecay },
    { params: params.filter((p) => dims(p) < 2), weightDecay: 0 },
  ].filter((g) => g.params.length > 0);
}

/**
 * AdamW with the two groups. `relocate` maps each group's entries after grouping
 * (ZeRO-3 swaps parameters for flat shard views, which would otherwise all look 1-D).
 */
export function newAdamW(params: readonly ParamLike[], cfg: OptimConfig, relocate?: (ps: ParamLike[]) => ParamLike[]): AdamW {
  const groups = adamwGroups(params, cfg).map((g) => (relocate ? { ...g, params: relocate(g.params) } : g));
  return new AdamW(groups, { lr: cfg.lr, betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, weightDecay: cfg.weightDecay });
}

export function setLr(opt: AdamW, lr: number): void {
  for (const g of opt.paramGroups) g.lr = lr;
}

export function buildOptimizer(model: Module, cfg: TrainConfig): TrainOptimizer {
  const params = nameParameters(model).map(([, p]) => p);
  const adamw = newAdamW(params, cfg.optim);
  return {
    adamw,
    step(lr, maxNorm) {
      const norm = gradNorm(params);
      if (!Number.isFinite(norm)) {
        adamw.zeroGrad();
        return { gradNorm: norm, applied: false };
      }
      setLr(adamw, lr);
      adamw.step({ gradScale: maxNorm > 0 ? clipCoefficient(norm, maxNorm) : 1 });
      adamw.zeroGrad();
      return { gradNorm: norm, applied: true };
    },
    zeroGrad: () => adamw.zeroGrad(),
  };
}

/** Learning rate of 0-based step `step`: linear warmup, then the configured decay to minLr. */
export function lrAt(o: OptimConfig, step: number, totalSteps: number): number {
  return scheduleLr({ kind: o.schedule, maxLr: o.lr, minLr: o.minLr, warmupSteps: Math.min(o.warmupSteps, totalSteps), totalSteps }, step);
}
