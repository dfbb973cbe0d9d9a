// The communication model of `athanor plan`: α–β ring times per collective, the link class a
// group spans (intra- or inter-node), the expert-parallel all-to-all, and log-log
// interpolation of measured tables. Used by the time estimate (estimate.ts) and the
// layout-specific terms (tp-terms.ts, sp-terms.ts, ep-terms.ts).
import type { ClusterSpec } from './cluster.js';
import type { Layout } from './layout.js';

export function interpLogLog(pts: [number, number][], x: number): number {
  const p = [...pts].sort((a, b) => a[0] - b[0]);
  let i = 0;
  while (i < p.length - 2 && x > p[i + 1]![0]) i++;
  const [x0, y0] = p[i]!, [x1, y1] = p[i + 1]!;
  const t = (Math.log(x) - Math.log(x0)) / (Math.log(x1) - Math.log(x0));
  return Math.exp(Math.log(y0) + t * (Math.log(y1) - Math.log(y0)));
}

/** Ring collective over n ranks: α per step plus bytes on the wire over β. */
export function ringTime(kind: 'allreduce' | 'allgather' | 'reducescatter', bytes: number, n: number, link: { alpha: number; beta: number }): number {
  if (n <= 1 || bytes <= 0) return 0;
  const steps = kind === 'allreduce' ? 2 * (n - 1) : n - 1;
  const wire = (kind === 'allreduce' ? 2 : 1) * ((n - 1) / n) * bytes;
  return steps * link.alpha + wire / link.beta;
}

/** The link a group uses: intra-node when its members fit in one node given the rank order tp, dp, pp (innermost first). */
export function linkFor(groupSpanDevices: number, c: ClusterSpec, concurrentPerNode: number): { alpha: number; beta: number; cls: 'intra' | 'inter' } {
  const dpn = c.devicesPerNode.value;
  if (groupSpanDevices <= dpn) return { alpha: c.network.intra.alpha.value, beta: c.network.intra.beta.value, cls: 'intra' };
  // A node's injection bandwidth is shared by the devices of the node that talk at once.
  return { alpha: c.network.inter.alpha.value, beta: c.network.inter.beta.value / Math.max(1, Math.min(dpn, concurrentPerNode)), cls: 'inter' };
}

/** Expert weights of an MoE layer (nn/moe.ts `h.{i}.moe.experts.*`): sharded over ep, reduced over edp. */
export function allToAllTime(bytes: number, l: Layout, c: ClusterSpec): { time: number; cls: 'intra' | 'inter' | 'intra+inter' } {
  const ep = l.ep;
  if (ep <= 1 || bytes <= 0) return { time: 0, cls: 'intra' };
  const dpn = c.devicesPerNode.value;
  const intra = c.network.intra, inter = c.network.inter;
  const m = Math.max(1, Math.min(ep, Math.floor(dpn / l.tp)));
  const interBeta = inter.beta.value / Math.max(1, dpn);
  const local = (m - 1) * intra.alpha.value + (bytes * (m - 1)) / ep / intra.beta.value;
  if (m >= ep) return { time: local, cls: 'intra' };
  const offNode = (bytes * (ep - m)) / ep / interBeta;
  if (l.a2a === 'hierarchical' && m > 1) {
    const nodes = Math.ceil(ep / m);
    // Phase 1 moves (m−1)/m of the data inside the node; phase 2 the off-node share.
    const p1 = (m - 1) * intra.alpha.value + (bytes * (m - 1)) / m / intra.beta.value;
    return { time: p1 + (nodes - 1) * inter.alpha.value + offNode, cls: 'intra+inter' };
  }
  return { time: local + (ep - m) * inter.alpha.value + offNode, cls: m > 1 ? 'intra+inter' : 'inter' };
}

/** Per-device memory of the largest pipeline stage (no cluster needed: `--dry-run` uses this). */
