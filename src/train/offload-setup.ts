// The trainer's AdamW (two weight-decay groups, optim-setup.ts) with its master weights
// and moments offloaded to disk (parallel.offload=disk, src/parallel/offload-optimizer.ts).
import type { ParamLike } from '../optim/index.js';
import { OffloadAdamW, type OffloadOptions } from '../parallel/offload-optimizer.js';
import type { OptimConfig } from './config.js';
import { adamwGroups } from './optim-setup.js';

export function newOffloadAdamW(params: readonly ParamLike[], cfg: OptimConfig, opts: OffloadOptions, relocate?: (ps: ParamLike[]) => ParamLike[]): OffloadAdamW {
  const groups = adamwGroups(params, cfg).map((g) => (relocate ? { ...g, params: relocate(g.params) } : g));
  return new OffloadAdamW(groups, { lr: cfg.lr, betas: [cfg.beta1, cfg.beta2], eps: cfg.eps, weightDecay: cfg.weightDecay }, opts);
}
