// Checkpoints stay layout-independent under tensor parallelism: what a rank saves (its
// local shards of parameters and optimizer moments, as flat local ranges) is mapped to
// ranges of the full logical tensors, and loading reads the global ranges a local shard
// needs. Replicated tensors are written by tensor-parallel rank 0 only.
import type { Segment } from '../io/checkpoint.js';
import type { Storage } from '../core/dtype.js';
import type { RangeSource } from '../optim/state-segments.js';
import { globalRuns, localShape, mapRange, type Shard } from './placement.js';
import type { Run } from '../nn/materialize.js';

/** The parameter a checkpoint tensor belongs to (`optim.exp_avg.h.0.mlp.c_fc.weight` → `h.0.mlp.c_fc.weight`). */
export function paramNameOf(name: string): string {
  const m = /^optim\.[a-z_]+\.(.+)$/.exec(name);
  return m ? m[1]! : name;
}

export class TensorParallelCheckpoint {
  private readonly runs = new Map<string, Run[]>();

  constructor(private readonly shards: Map<string, Shard>, private readonly tpRank: number) {}

  private shardOf(name: string): Shard | undefined {
    return this.shards.get(paramNameOf(name));
  }

  private runsOf(name: string, s: Shard): Run[] {
    const key = paramNameOf(name);
    let r = this.runs.get(key);
    if (!r) { r = globalRuns(s); this.runs.set(key, r); }
    return r;
  }

  /** Local segments → segments of the full tensors (replicated ones only from tensor-parallel rank 0). */
  toGlobal(segs: Segment[]): Segment[] {
    const out: Segment[] = [];
    for (const seg of segs) {
      const s = this.shardOf(seg.name);
      if (!s) { if (this.tpRank === 0) out.push(seg); continue; }
      for (const p of mapRange(this.runsOf(seg.name, s), seg.start, seg.end)) {
        const lo = p.local - seg.start;
        out.push({ name: seg.name, shape: [...s.globalShape], dtype: seg.dtype, start: p.start, end: p.start + p.length, data: seg.data.subarray(lo, lo + p.length) as Storage });
      }
    }
    return out;
  }

  /** A view of a checkpoint in this rank's local coordinates. */
  reader(r: RangeSource): RangeSource {
    return {
      dir: r.dir,
      has: (name) => r.has(name),
      entry: (name) => {
        const s = this.shardOf(name);
        const e = r.entry(name);
        if (!s) return e;
        if (e.shape.length !== s.globalShape.length || e.shape.some((d, i) => d !== s.globalShape[i])) {
          throw new Error(`${r.dir}: '${name}' has shape [${e.shape}] in the checkpoint, the model has [${s.globalShape}]`);
        }
        return { shape: localShape(s) };
      },
      readRange: (name, start, end, out) => {
        const s = this.shardOf(name);
        if (!s) return r.readRange(name, start, end, out);
        const dst = out ?? new Float32Array(end - start);
        for (const p of mapRange(this.runsOf(name, s), start, end)) {
          r.readRange(name, p.start, p.start + p.length, dst.subarray(p.local - start, p.local - start + p.length) as Storage);
        }
        return dst;
      },
    };
  }
}
