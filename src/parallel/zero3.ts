// ZeRO stage 3: each rank stores only its shard of every parameter. A block's
// parameters are all-gathered just before the block runs and released right after;
// backward re-gathers them, recomputes the block (activation checkpointing), and
// reduce-scatters the block's gradients into the shard gradient before releasing
// them. Embeddings, final norm and head (the "outer" unit, used at both ends of the
// model) are gathered once per micro-step and released after backward.
// Gathers run on the communication thread; the main thread waits with Atomics.wait
// because they happen inside the synchronous forward/backward.
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../core/tensor.js';
import type { GPT } from '../nn/gpt.js';
import { checkpoint } from '../autograd/checkpoint.js';
import type { AdamW, ParamSegment } from '../optim/index.js';
import type { CheckpointReader, Segment } from '../io/checkpoint.js';
import { shardOffsets, type Bucket, type FlatLayout } from './data-parallel.js';
import { sharedF32, type CommThread } from '../runtime/comm-thread.js';

interface Host {
  readonly comm: CommThread;
  readonly rank: number;
  launch(b: Bucket): void;
}

export class Zero3 {
  /** This rank's parameter shard: its slice of every unit, concatenated in bucket order. */
  private readonly shard: Float32Array;
  private readonly shardOff: number[];
  private readonly gathered = new Map<Bucket, Float32Array>();
  private readonly spare = new Map<number, Float32Array[]>();
  /** Slot name → element offset of the shard slot inside its parameter. */
  private readonly slotStart = new Map<string, number>();
  private readonly outer: Bucket;
  private readonly blockBucket: Bucket[];

  constructor(private readonly host: Host, model: GPT, private readonly layout: FlatLayout, full: Float32Array, private readonly ranges: [number, number][]) {
    this.shardOff = shardOffsets(ranges);
    this.shard = sharedF32(ranges.reduce((s, [lo, hi]) => s + hi - lo, 0));
    ranges.forEach(([lo, hi], i) => this.shard.set(full.subarray(lo, hi), this.shardOff[i]!));
    for (const [, p] of layout.named) p.box.data = null; // full parameters exist only while gathered
    this.blockBucket = model.h.map((b) => layout.bucketOf.get(b.parameters()[0]!)!);
    this.outer = layout.bucketOf.get(model.wte.weight)!;
    model.blockWrapper = (i, x, run) => {
      const b = this.blockBucket[i]!;
      this.gather(b);
      const params = b.params;
      const out = checkpoint((xs) => run(xs[0]!), [x], params, model.rng, {
        before: () => this.gather(b),
        // Gradients accumulate in full-size buffers over micro-steps (as ZeRO-2 does) and are
        // reduce-scattered once, after the last one: a reduce-scatter overwrites its output.
        after: () => { if (this.lastMicro) this.host.launch(b); this.release(b); },
      });
      this.release(b);
      return out;
    };
  }

  /** All-gathers a unit's parameters into a (reused) shared buffer and points the tensors at it. */
  gather(b: Bucket): void {
    if (this.gathered.has(b)) return;
    const n = b.hi - b.lo;
    const buf = this.spare.get(n)?.pop() ?? sharedF32(n);
    const i = b.index;
    const [lo, hi] = this.ranges[i]!;
    const mine = this.shard.subarray(this.shardOff[i]!, this.shardOff[i]! + (hi - lo));
    const req = this.host.comm.allGatherV(mine, buf, b.counts);
    this.host.comm.waitSync(req.id);
    for (const p of b.params) {
      const off = this.layout.offsets.get(p)! - b.lo;
      p.box.data = buf.subarray(off, off + p.size);
    }
    this.gathered.set(b, buf);
  }

  release(b: Bucket): void {
    const buf = this.gathered.get(b);
    if (!buf) return;
    this.gathered.delete(b);
    for (const p of b.params) p.box.data = null;
    const list = this.spare.get(buf.length) ?? [];
    if (list.length < 2) list.push(buf);
    this.spare.set(buf.length, list);
  }

  private lastMicro = true;

  beforeForward(lastMicro: boolean): void {
    this.lastMicro = lastMicro;
    this.gather(this.outer);
  }

  afterBackward(): void {
    this.release(this.outer);
  }

  /** The optimizer updates shard storage: one slot per (parameter, owned range). */
  shardSegments(segs: ParamSegment[]): ParamSegment[] {
    return segs.map((s) => {
      const p = s.param;
      const flat = this.layout.offsets.get(p)! + s.start;
      const i = this.layout.bucketOf.get(p)!.index;
      const o = this.shardOff[i]! + (flat - this.ranges[i]![0]);
      const t = fromStorage(this.shard.subarray(o, o + (s.end - s.start)), [s.end - s.start], 'float32');
      t.kept = true;
      this.slotStart.set(p.name!, s.start);
      return { param: t, start: 0, end: s.end - s.start, grad: s.grad, name: p.name };
    });
  }

  private ownedSlices(): { p: Tensor; name: string; start: number; data: Float32Array }[] {
    const out: { p: Tensor; name: string; start: number; data: Float32Array }[] = [];
    this.layout.buckets.forEach((b, i) => {
      const [lo, hi] = this.ranges[i]!;
      for (const p of b.params) {
        const base = this.layout.offsets.get(p)!;
        const a = Math.max(lo, base), c = Math.min(hi, base + p.size);
        if (a >= c) continue;
        const o = this.shardOff[i]! + (a - lo);
        out.push({ p, name: p.name!, start: a - base, data: this.shard.subarray(o, o + (c - a)) });
      }
    });
    return out;
  }

  paramSegments(): Segment[] {
    return this.ownedSlices().map((s) => ({ name: s.name, shape: [...s.p.shape], dtype: 'float32' as const, start: s.start, end: s.start + s.data.length, data: s.data }));
  }

  optimizerSegments(adamw: AdamW): Segment[] {
    const shapes = new Map(this.layout.named.map(([n, p]) => [n, p.shape]));
    const out: Segment[] = [];
    for (const s of adamw.slots()) {
      if (s.step === 0) continue;
      const start = this.slotStart.get(s.name)!;
      for (const [buf, arr] of Object.entries(s.state)) {
        out.push({ name: `optim.${buf}.${s.name}`, shape: [...shapes.get(s.name)!], dtype: 'float32', start, end: start + (s.end - s.start), data: arr });
      }
    }
    return out;
  }

  /** Reads this rank's parameter slices from a checkpoint of any layout. */
  loadParams(r: CheckpointReader): void {
    for (const s of this.ownedSlices()) r.readRange(s.name, s.start, s.start + s.data.length, s.data);
  }

  /** Where a shard slot sits in its parameter (for loading optimizer state). */
  slotOffset(name: string): number {
    return this.slotStart.get(name) ?? 0;
  }
}
