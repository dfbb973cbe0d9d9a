// ZeRO stage 3: each rank stores only its shard of every parameter. A unit's (e.g. a
// transformer block's) parameters are all-gathered just before its forward runs and
// released right after; backward re-gathers them, recomputes the unit (activation
// checkpointing), and reduce-scatters its gradients into the shard gradient before
// releasing them. The hook goes on the unit's `forward` (wrapMethod), so any module
// whose forward takes its activation first can be a unit. Parameters of no unit (for
// GPT: embeddings, final norm, head, used at both ends) form the outer unit, gathered
// once per micro-step and released after backward.
// Gathers run on the communication thread; the main thread waits with Atomics.wait
// because they happen inside the synchronous forward/backward.
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../core/tensor.js';
import type { Rng } from '../core/rng.js';
import { wrapMethod, initSpecs, type Module } from '../nn/module.js';
import { checkpoint } from '../autograd/checkpoint.js';
import type { AdamW, ParamSegment } from '../optim/index.js';
import type { Segment } from '../io/checkpoint.js';
import type { RangeSource } from '../optim/state-segments.js';
import { shardOffsets, type Bucket, type FlatLayout } from './flat-buckets.js';
import type { GradComm } from './grad-comm.js';
import type { Work } from '../runtime/communicator.js';
import { sharedF32 } from '../runtime/comm-thread.js';
import { fillInit } from '../nn/materialize.js';
import { sampleArrayBuffers } from '../core/array-buffer-peak.js';

interface Host {
  readonly comm: GradComm;
  readonly rank: number;
  launch(b: Bucket): void;
  stagingFor(b: Bucket): { slot: number; buf: Float32Array };
  reduceStaged(b: Bucket, slot: number, st: Float32Array): void;
}

export class Zero3 {
  /** This rank's parameter shard: its slice of every unit, concatenated in bucket order. */
  private readonly shard: Float32Array;
  private readonly shardOff: number[];
  private readonly gathered = new Map<Bucket, Float32Array>();
  private readonly spare = new Map<number, Float32Array[]>();
  /** Slot name → element offset of the shard slot inside its parameter. */
  private readonly slotStart = new Map<string, number>();
  private readonly outer: Bucket | null;
  /** Elements of the largest unit other than the outer one (the size of every inner gather buffer). */
  private readonly largestInner: number;
  /** The gather allocator's own counters, in bytes: buffers lent to gathered units now,
   *  idle in the spare pool, the most ever lent at once, and all ever allocated. */
  private readonly bytes = { gathered: 0, pooled: 0, peakGathered: 0, allocated: 0 };

  constructor(private readonly host: Host, units: Module[], private readonly layout: FlatLayout, private readonly ranges: [number, number][], rng?: Rng, seed?: number) {
    this.shardOff = shardOffsets(ranges);
    this.shard = sharedF32(ranges.reduce((s, [lo, hi]) => s + hi - lo, 0));
    this.materializeShard(seed);
    for (const [, p] of layout.named) {
      // Full parameters exist only while gathered; from here on they are ordinary (non-meta) tensors without storage.
      p.box.meta = false;
      p.box.data = null;
    }
    const inUnit = new Set(units.flatMap((u) => u.parameters()));
    const outerParam = layout.named.find(([, p]) => !inUnit.has(p))?.[1];
    this.outer = outerParam ? layout.bucketOf.get(outerParam)! : null;
    this.largestInner = Math.max(0, ...layout.buckets.filter((b) => b !== this.outer).map((b) => b.hi - b.lo));
    const order: Bucket[] = [];
    for (const u of units) {
      const params = u.parameters();
      if (params.length) order.push(layout.bucketOf.get(params[0]!)!);
    }
    let k = 0;
    for (const u of units) {
      const params = u.parameters();
      if (!params.length) continue;
      const b = order[k]!, next = order[k + 1], prev = order[k - 1];
      k++;
      wrapMethod(u as Module & { forward: (x: Tensor, ...rest: unknown[]) => Tensor }, 'forward', (nextFn) => (x: Tensor, ...rest: unknown[]) => {
        this.gather(b);
        // The next unit's gather runs on the communication thread while this one computes.
        if (this.prefetchOn && next) this.prefetch(next);
        const out = checkpoint((xs) => nextFn(xs[0]!, ...rest), [x], params, rng, {
          before: () => {
            this.gather(b);
            // Backward visits the units in reverse: prefetch the one before.
            if (this.prefetchOn && prev) this.prefetch(prev);
            if (this.lastMicro) this.gradsIntoStaging(b);
          },
          // Gradients accumulate in full-size buffers over micro-steps (as ZeRO-2 does) and are
          // reduce-scattered once, after the last one: a reduce-scatter overwrites its output.
          after: () => { if (this.lastMicro) this.reduceUnit(b); this.release(b); },
        });
        this.release(b);
        return out;
      });
    }
  }

  /**
   * Fills this rank's shard. A parameter still on the meta device is drawn from its own
   * init stream (materialize.ts) at exactly the elements this rank owns, so the rank never
   * allocates the full parameter and any dp starts from the single-process values; a
   * parameter that already has storage (a model built eagerly) is copied.
   */
  private materializeShard(seed: number | undefined): void {
    for (const { p, start, data: dst } of this.ownedSlices()) {
      if (p.box.meta) {
        const init = initSpecs.get(p);
        if (!init) throw new Error(`ZeRO-3: parameter '${p.name}' is on the meta device without a recorded initializer`);
        if (seed === undefined) throw new Error(`ZeRO-3: parameter '${p.name}' is on the meta device; fully-shard needs the model's init seed to materialize it`);
        fillInit(dst, init, seed, p.name!, [{ start, length: dst.length }]);
      } else {
        dst.set((p.data as Float32Array).subarray(p.offset + start, p.offset + start + dst.length));
      }
    }
  }

  /** Units whose gradients point into a staging buffer during their backward. */
  private readonly staged = new Map<Bucket, { slot: number; buf: Float32Array }>();

  /**
   * Before a unit's last backward of the step: its parameters' gradients become views of
   * a reduce-scatter staging buffer (holding what earlier micro-steps accumulated, or
   * zeros), so backward accumulates straight into it and no full-size gradient is
   * allocated beside the staging pair.
   */
  private gradsIntoStaging(b: Bucket): void {
    const s = this.host.stagingFor(b);
    for (const p of b.params) {
      const off = this.layout.offsets.get(p)! - b.lo;
      const view = s.buf.subarray(off, off + p.size);
      if (p.grad) {
        view.set(p.grad.data.subarray(p.grad.offset, p.grad.offset + p.size) as Float32Array);
        p.grad.dispose();
      } else view.fill(0);
      const g = fromStorage(view, p.shape, 'float32');
      g.kept = true;
      p.grad = g;
    }
    this.staged.set(b, s);
  }

  /** After the unit's backward: reduce-scatter its staged gradients into the shard gradient. */
  private reduceUnit(b: Bucket): void {
    const s = this.staged.get(b);
    if (!s) { this.host.launch(b); return; }
    this.staged.delete(b);
    // The views belong to the staging buffer (shared memory): dropped, not returned to the pool.
    for (const p of b.params) p.grad = null;
    this.host.reduceStaged(b, s.slot, s.buf);
  }

  /** Whether gathers of the next unit are started ahead (ZeRO-3 `prefetch`; costs one more unit of memory). */
  prefetchOn = true;
  /** Gathers started ahead: the buffer and the request still in flight on the communication thread. */
  private readonly inflight = new Map<Bucket, { buf: Float32Array; req: Work }>();

  /** Starts a unit's all-gather without waiting for it. */
  prefetch(b: Bucket): void {
    if (this.gathered.has(b) || this.inflight.has(b)) return;
    const buf = this.take(b);
    const [lo, hi] = this.ranges[b.index]!;
    const mine = this.shard.subarray(this.shardOff[b.index]!, this.shardOff[b.index]! + (hi - lo));
    this.inflight.set(b, { buf, req: this.host.comm.allGatherV(mine, buf, b.counts) });
  }

  /** Waits for every prefetched gather nobody used (an evaluation ends early) and returns its buffer. */
  drainPrefetch(): void {
    for (const [b, { buf, req }] of this.inflight) {
      this.host.comm.waitSync(req);
      this.inflight.delete(b);
      this.giveBack(buf);
    }
  }

  /**
   * A gather buffer for unit b from the spare pool, or a new one (counted), cut to b's size.
   * Every inner unit's buffer has the largest inner unit's size, so the two buffers that
   * alternate between gathered and prefetched units serve units of any size (the embedding,
   * a block, the head) instead of two per distinct size; the outer unit has its own.
   */
  private take(b: Bucket): Float32Array {
    const n = b.hi - b.lo;
    const size = b === this.outer ? n : this.largestInner;
    let buf = this.spare.get(size)?.pop();
    if (buf) this.bytes.pooled -= buf.byteLength;
    else { buf = sharedF32(size); this.bytes.allocated += buf.byteLength; sampleArrayBuffers(); }
    this.bytes.gathered += buf.byteLength;
    this.bytes.peakGathered = Math.max(this.bytes.peakGathered, this.bytes.gathered);
    const out = buf.subarray(0, n);
    this.whole.set(out, buf);
    return out;
  }

  /** The allocation behind each lent buffer (take hands out a prefix of it). */
  private readonly whole = new WeakMap<Float32Array, Float32Array>();

  private giveBack(part: Float32Array): void {
    const buf = this.whole.get(part) ?? part;
    this.whole.delete(part);
    this.bytes.gathered -= buf.byteLength;
    // As many idle buffers per unit size as gathers can overlap (one, or two with prefetch)
    // are kept for the next gathers; any other is left to the GC.
    const list = this.spare.get(buf.length) ?? [];
    if (list.length < (this.prefetchOn ? 2 : 1)) { list.push(buf); this.bytes.pooled += buf.byteLength; }
    this.spare.set(buf.length, list);
  }

  /** All-gathers a unit's parameters (or takes its prefetched gather) into a shared buffer and points the tensors at it. */
  gather(b: Bucket): void {
    if (this.gathered.has(b)) return;
    const ahead = this.inflight.get(b);
    if (ahead) {
      this.inflight.delete(b);
      this.host.comm.waitSync(ahead.req);
      this.bind(b, ahead.buf);
      return;
    }
    const buf = this.take(b);
    const i = b.index;
    const [lo, hi] = this.ranges[i]!;
    const mine = this.shard.subarray(this.shardOff[i]!, this.shardOff[i]! + (hi - lo));
    const req = this.host.comm.allGatherV(mine, buf, b.counts);
    this.host.comm.waitSync(req);
    this.bind(b, buf);
  }

  private bind(b: Bucket, buf: Float32Array): void {
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
    this.giveBack(buf);
  }

  /** Measured bytes: the parameter shard and the gather allocator's counters. */
  memory(): { shard: number; gathered: number; pooled: number; peakGathered: number; allocated: number } {
    return { shard: this.shard.byteLength, ...this.bytes };
  }

  /** Elements of the largest unit and of the outer unit (what one gather may add beside the shard; a prefetch adds one more unit). */
  unitElements(): { largest: number; outer: number } {
    return { largest: this.largestInner, outer: this.outer ? this.outer.hi - this.outer.lo : 0 };
  }

  private lastMicro = true;

  beforeForward(lastMicro: boolean): void {
    this.lastMicro = lastMicro;
    if (this.outer) this.gather(this.outer);
  }

  afterBackward(): void {
    this.drainPrefetch();
    if (this.outer) this.release(this.outer);
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
  loadParams(r: RangeSource): void {
    for (const s of this.ownedSlices()) r.readRange(s.name, s.start, s.start + s.data.length, s.data);
  }

  /** Where a shard slot sits in its parameter (for loading optimizer state). */
  slotOffset(name: string): number {
    return this.slotStart.get(name) ?? 0;
  }
}
