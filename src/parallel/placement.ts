// Where a rank's local tensor sits in the full (logical) tensor, for parameters split
// over a tensor-parallel group. A sharded tensor splits dimension `dim` of the global
// shape; with `blocks` > 1 that dimension is first cut into `blocks` equal blocks and
// each block is split (the fused QKV projection: q, k and v are each split by heads,
// and the local tensor is [q_r; k_r; v_r]). Everything layout-independent (init,
// checkpoints) goes through globalRuns(): the local flat elements as ascending runs of
// the global flat tensor.
import type { Run } from '../nn/materialize.js';

export interface Shard {
  globalShape: readonly number[];
  dim: number;
  /** Equal blocks of `dim`, each split over the group (default 1). */
  blocks: number;
  rank: number;
  size: number;
}

export function localShape(s: Shard): number[] {
  const out = [...s.globalShape];
  const d = out[s.dim]!;
  if (d % (s.blocks * s.size) !== 0) throw new Error(`tensor parallel: dimension ${s.dim} (${d}) of [${s.globalShape}] is not divisible by ${s.blocks} block(s) × ${s.size} ranks`);
  out[s.dim] = d / s.size;
  return out;
}

/** The local tensor's elements, in local flat order, as runs of the global flat tensor. */
export function globalRuns(s: Shard): Run[] {
  const g = s.globalShape;
  const outer = g.slice(0, s.dim).reduce((a, b) => a * b, 1);
  const inner = g.slice(s.dim + 1).reduce((a, b) => a * b, 1);
  const D = g[s.dim]!, bs = D / s.blocks, part = bs / s.size;
  const runs: Run[] = [];
  for (let o = 0; o < outer; o++) {
    for (let k = 0; k < s.blocks; k++) {
      runs.push({ start: (o * D + k * bs + s.rank * part) * inner, length: part * inner });
    }
  }
  return runs;
}

/** Maps the local flat range [lo, hi) to pieces { global start, length, local offset }. */
export function mapRange(runs: Run[], lo: number, hi: number): { start: number; length: number; local: number }[] {
  const out: { start: number; length: number; local: number }[] = [];
  let pos = 0;
  for (const r of runs) {
    const a = Math.max(lo, pos), b = Math.min(hi, pos + r.length);
    if (a < b) out.push({ start: r.start + (a - pos), length: b - a, local: a });
    pos += r.length;
    if (pos >= hi) break;
  }
  return out;
}
