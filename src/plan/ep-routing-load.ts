// The routing load the planner's epLoad takes (plan/ep-terms.ts), measured the honest way:
// the run's own routing, reproduced in one process. The ep run's global batch (dp ranks ×
// gradAccum micro-batches, from the trainer's TokenLoader) is trained here as gradAccum' =
// dp × gradAccum micro-batches of one process (micro-batch j is dp rank j mod dp's micro-batch
// ⌊j/dp⌋: the same tokens, the same mean gradient, so the same router weights step after
// step), for the same steps from the same seed. Every training forward's expert counts are
// recorded (the counts that parallel/expert-parallel.ts exchanges), and per step, MoE layer
// and ep group the busiest ep rank's received rows are divided by the balanced share.
// Nothing is timed and nothing is read from the measured runs: this is an input the plan
// takes, like a capacity factor. The router moves fast from initialisation (moe-tiny's
// top-2 over nearly uniform scores: the first step's forwards are 1.15× at worst, step 6's
// 1.37×), so the routing of the initial model alone would understate it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GPT } from '../nn/gpt.js';
import { isGradEnabled } from '../autograd/tape.js';
import { singleProcessLayer } from '../train/parallel-layer.js';
import { train } from '../train/trainer.js';
import type { TrainConfig } from '../train/config.js';

export interface RoutingLoad {
  /** Busiest ep rank's received rows over the balanced share, at the worst (step, layer). */
  peak: number;
  /** The same per (step, layer), averaged. */
  mean: number;
  /** Forwards (steps × MoE layers) looked at. */
  forwards: number;
}

/**
 * Trains cfg (as dp ranks × cfg.train.gradAccum micro-batches of cfg.train.microBatch
 * sequences, in one process) for `steps` steps and measures the routing load of ep groups
 * of ep consecutive dp ranks (as parallel/mesh.ts groups them).
 */
export async function epRoutingLoad(cfg: TrainConfig, dp: number, ep: number, steps: number): Promise<RoutingLoad> {
  if (ep < 2 || dp % ep !== 0) throw new Error(`epRoutingLoad: ep=${ep} must be >= 2 and divide dp=${dp}`);
  const ga = cfg.train.gradAccum, out = mkdtempSync(join(tmpdir(), 'athanor-eproute-'));
  const one: TrainConfig = {
    ...cfg,
    train: { ...cfg.train, steps, gradAccum: dp * ga, evalEvery: 0, evalBatches: 1, checkpointEvery: 0, logEvery: steps, outDir: out, maxSeconds: 0, targetLoss: 0 },
    parallel: { ...cfg.parallel, tp: 1, pp: 1, dp: 1, ep: 1, zero: 0 },
  };
  // Expert rows per training forward, in forward order: micro-batch j, then its MoE layers.
  const fwd: Float64Array[] = [];
  let nLayers = 0, E = 0;
  const base = singleProcessLayer();
  const layer = {
    ...base,
    buildModel: (c: TrainConfig) => {
      const model = base.buildModel(c) as GPT;
      const layers = model.moeLayers();
      nLayers = layers.length;
      for (const m of layers) {
        E = m.cfg.experts;
        // Training forwards only (the final evaluation runs without the tape).
        m.expertRunner = (xp, counts, local) => { if (isGradEnabled()) fwd.push(Float64Array.from(counts)); return local(xp, counts); };
      }
      return model;
    },
  };
  try {
    await train(one, { parallel: layer, quiet: true });
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  if (!nLayers) throw new Error(`epRoutingLoad: model '${cfg.preset}' has no MoE layers`);
  const perStep = dp * ga * nLayers, El = E / ep;
  if (fwd.length !== steps * perStep) throw new Error(`epRoutingLoad: ${fwd.length} training forwards recorded, expected ${steps} steps × ${perStep}`);
  let peak = 0, sum = 0, n = 0;
  for (let s = 0; s < steps; s++) {
    for (let i = 0; i < ga; i++) {
      for (let li = 0; li < nLayers; li++) {
        for (let g = 0; g < dp / ep; g++) {
          const got = new Float64Array(ep);
          let total = 0;
          for (let q = 0; q < ep; q++) {
            // dp rank r = g·ep + q ran single-process micro-batch j = i·dp + r.
            const c = fwd[s * perStep + (i * dp + g * ep + q) * nLayers + li]!;
            for (let e = 0; e < E; e++) { got[Math.floor(e / El)]! += c[e]!; total += c[e]!; }
          }
          if (total === 0) continue;
          const r = Math.max(...got) / (total / ep);
          peak = Math.max(peak, r);
          sum += r;
          n++;
        }
      }
    }
  }
  return { peak, mean: n ? sum / n : 1, forwards: n };
}
