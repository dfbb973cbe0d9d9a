// `--search`: every valid layout for a device count and global batch, those that do not
// fit dropped, the rest ranked by predicted tokens/s.
import type { GptConfig } from '../nn/gpt-config.js';
import type { ClusterSpec } from './cluster.js';
import { estimate, tracesRecompute, type Estimate } from './estimate.js';
import { layoutProblem, type Layout } from './layout.js';
import { traceGpt } from './models.js';
import type { TraceResult } from './trace.js';

const divisors = (n: number): number[] => { const d: number[] = []; for (let i = 1; i <= n; i++) if (n % i === 0) d.push(i); return d; };

/** (ep, a2a) pairs to try: ep = 1 for dense models; for MoE every divisor of dp (layoutProblem rejects those not dividing the experts). */
function epChoices(dp: number, tp: number, experts: number, devicesPerNode: number): [number, Layout['a2a']][] {
  if (!experts) return [[1, 'flat']];
  const out: [number, Layout['a2a']][] = [];
  for (const ep of divisors(dp)) {
    out.push([ep, 'flat']);
    if (ep * tp > devicesPerNode && devicesPerNode / tp > 1) out.push([ep, 'hierarchical']);
  }
  return out;
}

export interface SearchResult {
  considered: number;
  invalid: number;
  tooBig: number;
  ranked: { est: Estimate; why: string }[];
}

/** A trace cache keyed by micro-batch, recompute policy and traced precision (the only trace inputs a layout changes). */
export function traceCache(model: GptConfig): (mb: number, recompute: boolean, precision?: 'fp32' | 'bf16') => TraceResult {
  const cache = new Map<string, TraceResult>();
  return (mb, recompute, precision = 'fp32') => {
    const k = `${mb}/${recompute}/${precision}`;
    let t = cache.get(k);
    if (!t) { t = traceGpt(model, { microBatch: mb, recompute, precision }); cache.set(k, t); }
    return t;
  };
}

export function searchLayouts(model: GptConfig, cluster: ClusterSpec, o: { devices: number; globalBatch: number; precision: Layout['precision']; top?: number; trace?: (mb: number, rc: boolean, precision?: 'fp32' | 'bf16') => TraceResult }): SearchResult {
  const trace = o.trace ?? traceCache(model);
  const dpn = cluster.devicesPerNode.value;
  const out: Estimate[] = [];
  let considered = 0, invalid = 0, tooBig = 0;
  const experts = model.moe?.experts ?? 0;
  // tp within a node, or across up to 8 single-device nodes (Fugaku-LLM ran TP6 over Tofu).
  for (const tp of divisors(o.devices).filter((t) => t <= Math.max(dpn, 8))) {
    for (const pp of divisors(o.devices / tp).filter((p) => p <= model.nLayer)) {
      const dp = o.devices / tp / pp;
      if (o.globalBatch % dp !== 0) continue;
      const perDp = o.globalBatch / dp;
      for (const mb of divisors(perDp).filter((m) => m <= 16)) {
        const ga = perDp / mb;
        for (const zero of (dp > 1 ? [0, 1, 2, 3] : [0]) as Layout['zero'][]) {
          for (const recompute of ['none', 'full'] as const) {
            for (const sp of tp > 1 ? [false, true] : [false]) {
              // Expert parallelism (MoE models): every ep dividing dp, with both all-to-all algorithms once it leaves a node.
              for (const [ep, a2a] of epChoices(dp, tp, experts, dpn)) {
                considered++;
                const l: Layout = { tp, pp, dp, ep, a2a, zero, shardGroup: 0, sp, recompute, precision: o.precision, offload: 'none', mb, ga, schedule: '1f1b', vpp: 1 };
                if (layoutProblem(l, model)) { invalid++; continue; }
                const est = estimate(trace(mb, tracesRecompute(l, cluster.allocator), cluster.allocator === 'athanor-pool' ? l.precision : 'fp32'), l, cluster, { seqLen: model.seqLen, dModel: model.dModel });
                if (!est.fits) { tooBig++; continue; }
                out.push(est);
              }
            }
          }
        }
      }
    }
  }
  out.sort((a, b) => b.tokensPerSec - a.tokensPerSec || a.memory.total - b.memory.total);
  const top = out.slice(0, o.top ?? 5);
  return { considered, invalid, tooBig, ranked: top.map((e, i) => ({ est: e, why: why(e, i === 0 ? null : top[0]!, cluster) })) };
}

function why(e: Estimate, best: Estimate | null, c: ClusterSpec): string {
  const t = e.time;
  const compute = Object.values(t.compute).reduce((a, b) => a + b, 0);
  const head = (c.device.memoryBytes.value - e.memory.total) / 2 ** 30;
  const parts = [
    `fits with ${head.toFixed(1)} GiB spare`,
    `compute ${(100 * compute / t.step).toFixed(0)}% of the step`,
    t.exposedComm > 0 ? `exposed communication ${(100 * t.exposedComm / t.step).toFixed(0)}%` : 'no exposed communication',
  ];
  if (t.bubble > 0) parts.push(`pipeline bubble ${(100 * t.bubble / t.step).toFixed(0)}%`);
  if (e.layout.ep > 1) parts.push(`experts over ep=${e.layout.ep} (${e.layout.a2a} all-to-all)`);
  if (e.layout.recompute === 'full') parts.push('recomputation trades compute for activation memory');
  if (best) parts.push(`${(100 * (1 - e.tokensPerSec / best.tokensPerSec)).toFixed(1)}% slower than #1`);
  return parts.join('; ');
}
