// The trainer's MoE bookkeeping after each optimizer step: routing statistics summed over
// data-parallel ranks (counts are integers, so the sum is exact), the aux-loss-free bias
// update on those global counts (every rank moves its biases identically), and the
// metrics: drop rate, load per expert (max/mean), aux loss, router entropy.
import type { MoeMlp, MoeStats } from '../nn/moe.js';
import { marginHistogramSize } from '../nn/moe-router.js';

/** What holds MoE layers: a whole GPT, or a pipeline rank's stages (some of the layers). */
export interface MoeModel { moeLayers(): MoeMlp[]; takeMoeStats(): MoeStats[] }

/**
 * Under pipeline parallelism a rank holds some MoE layers: where they sit among all of the
 * model's, and an element-wise float64 sum over the pipeline ranks (rank order), so the
 * metrics cover every layer as one process reports them.
 */
export interface MoePipeline {
  indices: number[];
  total: number;
  /** model.moe.experts (a stage may hold no MoE layer). */
  experts: number;
  sum(v: Float64Array): Promise<Float64Array>;
}

export interface MoeStepMetrics {
  /** Fraction of token→expert assignments dropped by capacity. */
  dropRate: number;
  /** Fraction moved to another expert by SWIPE. */
  movedRate: number;
  /** max / mean rows per expert, worst layer. */
  maxLoad: number;
  /** Rows per expert of every MoE layer (global). */
  load: number[][];
  auxLoss: number;
  zLoss: number;
  /** Mean router entropy per token (nats). */
  entropy: number;
}

/** Sum of a scalar over ranks, from the trainer's mean. */
type MeanScalar = (x: number) => Promise<number>;
/** In-place element-wise sum of integer counts over the same ranks as MeanScalar (one collective). */
export type SumCounts = (v: Int32Array) => Promise<void>;

export async function moeAfterStep(model: MoeModel, world: number, meanScalar: MeanScalar, pipe?: MoePipeline, sumCounts?: SumCounts): Promise<MoeStepMetrics | null> {
  const layers = model.moeLayers();
  if (pipe ? pipe.total === 0 : layers.length === 0) return null;
  const stats = model.takeMoeStats();
  // Pack every count into one vector; reduce element-wise (a scalar mean per element keeps
  // to the GradSync interface; E·L is small).
  const sumAll = async (v: number[]) => {
    if (world === 1) return v;
    const out: number[] = [];
    for (const x of v) out.push(Math.round((await meanScalar(x)) * world));
    return out;
  };
  const E = layers[0]?.cfg.experts ?? pipe!.experts;
  const local: number[] = [];
  for (const s of stats) local.push(s.tokens, s.assignments, s.dropped, s.moved, ...s.load, ...s.routed);
  const g = await sumAll(local);
  // balance = bias: every layer's selection-margin histograms (integer counts) summed over
  // the ranks, in one vector reduction where the layout offers one.
  const margins: Float64Array[] = [];
  if (layers.some((m) => m.routingBias)) {
    const n = marginHistogramSize(E);
    const v = new Int32Array(n * stats.length);
    stats.forEach((s, i) => { for (let j = 0; j < n; j++) v[i * n + j] = s.margins[j]!; });
    if (world > 1 && sumCounts) await sumCounts(v);
    else if (world > 1) { const gv = await sumAll(Array.from(v)); v.set(gv); }
    for (let i = 0; i < stats.length; i++) margins.push(Float64Array.from(v.subarray(i * n, (i + 1) * n)));
  }
  const per = 4 + 2 * E;
  layers.forEach((m, i) => {
    const o = i * per;
    if (m.routingBias) m.updateBias(g.slice(o + 4 + E, o + 4 + 2 * E), margins[i]!);
  });
  // aux and z: per forward, summed over layers, averaged over micro-batches and ranks.
  const fw = Math.max(1, stats[0]?.forwards ?? 1);
  const mean = async (x: number) => (world === 1 ? x : meanScalar(x));
  let aux = await mean(stats.reduce((a, s) => a + s.auxLoss, 0) / fw);
  let z = await mean(stats.reduce((a, s) => a + s.zLoss, 0) / fw);
  // The first MoE layer's router entropy (under a pipeline: from the rank that holds it).
  const holdsFirst = pipe ? pipe.indices[0] === 0 : true;
  let ent = holdsFirst ? (await mean(stats[0]!.entropySum)) * world : 0;
  let all = g, count = layers.length;
  if (pipe) {
    // Every layer's counts in its global slot (zeros elsewhere: adding them is exact), and
    // the scalars summed over the pipeline ranks.
    const v = new Float64Array(pipe.total * per + 3);
    pipe.indices.forEach((gi, i) => v.set(g.slice(i * per, (i + 1) * per), gi * per));
    v[pipe.total * per] = aux; v[pipe.total * per + 1] = z; v[pipe.total * per + 2] = ent;
    const s = await pipe.sum(v);
    all = Array.from(s.subarray(0, pipe.total * per));
    [aux, z, ent] = [s[pipe.total * per]!, s[pipe.total * per + 1]!, s[pipe.total * per + 2]!];
    count = pipe.total;
  }
  let assignments = 0, dropped = 0, moved = 0, tokens = 0, maxLoad = 0;
  const load: number[][] = [];
  for (let i = 0; i < count; i++) {
    const o = i * per;
    tokens += all[o]!; assignments += all[o + 1]!; dropped += all[o + 2]!; moved += all[o + 3]!;
    const l = all.slice(o + 4, o + 4 + E);
    load.push(l);
    const mean = l.reduce((a, b) => a + b, 0) / E;
    if (mean > 0) maxLoad = Math.max(maxLoad, Math.max(...l) / mean);
  }
  return {
    dropRate: assignments ? dropped / assignments : 0,
    movedRate: assignments ? moved / assignments : 0,
    maxLoad,
    load,
    auxLoss: aux,
    zLoss: z,
    // first MoE layer's router (tokens counts every layer's tokens)
    entropy: tokens ? ent / (tokens / count) : 0,
  };
}

/**
 * The MoE state a checkpoint must carry besides parameters: the `bias` balancing's
 * per-expert selection biases, one list per MoE layer in block order. They are global
 * (every rank holds all E values, identical on every rank), so they go in the JSON
 * state and resume under any ep / dp layout. null when no layer has a bias.
 */
export function moeCheckpointState(model: MoeModel): number[][] | null {
  const layers = model.moeLayers();
  if (!layers.some((m) => m.routingBias)) return null;
  return layers.map((m) => (m.routingBias ? Array.from(m.routingBias) : []));
}

/** Restores what moeCheckpointState saved; the layer count and expert count must match. */
export function restoreMoeCheckpointState(model: MoeModel, saved: number[][] | undefined, where: string): void {
  const layers = model.moeLayers();
  const want = layers.some((m) => m.routingBias);
  if (!want) return;
  if (!saved) throw new Error(`${where}: the checkpoint has no moeBias (model.moe.balance = bias needs the routing biases); it was written by a run with another model.moe.balance`);
  if (saved.length !== layers.length) throw new Error(`${where}: moeBias has ${saved.length} layers, the model has ${layers.length} MoE layers`);
  layers.forEach((m, i) => {
    const b = m.routingBias!, s = saved[i]!;
    if (s.length !== b.length) throw new Error(`${where}: moeBias[${i}] has ${s.length} experts, model.moe.experts is ${b.length}`);
    b.set(s);
  });
}
