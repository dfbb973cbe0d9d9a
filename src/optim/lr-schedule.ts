// Learning-rate schedules as pure functions of the optimizer step, plus a small
// class that writes the value into an optimizer's param groups.
//
// `step` counts optimizer steps already taken (0 for the first update). With W
// warmup steps, S total steps, maxLr and minLr:
//   warmup (step < W):   lr = maxLr * (step + 1) / W
//       linear ramp that reaches maxLr on step W-1 and never uses lr 0 (nanoGPT / llm.c;
//       PyTorch LinearLR(start_factor=1/W, total_iters=W-1)).
//   after warmup, progress p = (step - W) / (S - W) clamped to [0, 1]:
//   'cosine':   lr = minLr + (maxLr - minLr) * 0.5 * (1 + cos(pi * p))
//       (PyTorch CosineAnnealingLR with eta_min = minLr, T_max = S - W, closed form)
//   'linear':   lr = maxLr + (minLr - maxLr) * p
//       (PyTorch LinearLR from 1 to minLr/maxLr over S - W steps)
//   'constant': lr = maxLr
//   Beyond S the decaying schedules stay at minLr.
import type { BaseHyper, Optimizer } from './optimizer.js';

export type LrScheduleKind = 'cosine' | 'linear' | 'constant';

export interface LrScheduleConfig {
  kind: LrScheduleKind;
  maxLr: number;
  /** Floor of the decaying schedules (default 0). */
  minLr?: number;
  /** Linear warmup steps (default 0). */
  warmupSteps?: number;
  /** Step at which cosine/linear decay reaches minLr (required for them). */
  totalSteps?: number;
}

export function checkLrSchedule(cfg: LrScheduleConfig, where = 'lr schedule'): void {
  const w = cfg.warmupSteps ?? 0;
  if (!['cosine', 'linear', 'constant'].includes(cfg.kind)) throw new Error(`${where}: unknown kind '${cfg.kind}'`);
  if (!(cfg.maxLr >= 0)) throw new Error(`${where}: field 'maxLr' must be >= 0 (got ${cfg.maxLr})`);
  if (!((cfg.minLr ?? 0) >= 0)) throw new Error(`${where}: field 'minLr' must be >= 0`);
  if (!Number.isInteger(w) || w < 0) throw new Error(`${where}: field 'warmupSteps' must be an integer >= 0 (got ${w})`);
  if (cfg.kind !== 'constant') {
    const s = cfg.totalSteps;
    if (s === undefined || !Number.isInteger(s) || s < w) throw new Error(`${where}: field 'totalSteps' must be an integer >= warmupSteps (${w}) for '${cfg.kind}' (got ${s})`);
  }
}

/** The learning rate for optimizer step `step` (0-based). */
export function lrAt(cfg: LrScheduleConfig, step: number): number {
  const w = cfg.warmupSteps ?? 0;
  const maxLr = cfg.maxLr, minLr = cfg.minLr ?? 0;
  if (step < w) return maxLr * (step + 1) / w;
  if (cfg.kind === 'constant') return maxLr;
  const span = (cfg.totalSteps ?? w) - w;
  const p = span <= 0 ? 1 : Math.min(1, Math.max(0, (step - w) / span));
  if (cfg.kind === 'cosine') return minLr + (maxLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * p));
  return maxLr + (minLr - maxLr) * p;
}

/**
 * Applies a schedule to an optimizer. Each group's lr becomes
 * lrAt(step) * group.initialLr / maxLr, so a group created with lr = maxLr follows
 * the schedule exactly and other groups keep their ratio to it.
 */
export class LrScheduler {
  constructor(readonly optimizer: Optimizer<BaseHyper>, readonly config: LrScheduleConfig) {
    checkLrSchedule(config);
  }

  lr(step: number): number {
    return lrAt(this.config, step);
  }

  /** Sets the groups' lr for the update about to be taken as step `step`; returns lrAt(step). */
  apply(step: number): number {
    const lr = this.lr(step);
    const ratio = this.config.maxLr === 0 ? 0 : lr / this.config.maxLr;
    for (const g of this.optimizer.paramGroups) g.lr = this.config.maxLr === 0 ? 0 : g.initialLr * ratio;
    return lr;
  }
}
