// AdamW whose fp32 master weights and moments live on disk (`parallel.offload=disk`):
// the slots (parameters, or this rank's ZeRO ranges of them) are the same as the
// in-memory AdamW's, but `slot.state` stays empty and each slot's master / exp_avg /
// exp_avg_sq sit in the rank's OffloadStore file. A step streams the chunks in file
// order through two buffers: while chunk i is updated on the main thread, chunk i+1
// is read and chunk i-1 written back on libuv's thread pool. After its update a
// chunk's master is copied into the compute copy of the parameters (the flat
// parameters, or the ZeRO-3 shard the gathers read from), which is all the model
// itself ever reads.
//
// The update is AdamW's element-wise kernel on the same values in the same order (and
// the same native / reference choice, made per slot), and chunks are multiples of 64
// elements, so the result equals the in-memory optimizer bit for bit.
import { AdamW, type AdamWHyper } from '../optim/adamw.js';
import { slotGrad, slotParam, type OptimizerStateDict, type ParamGroup, type ParamGroupSpec, type ParamLike, type Slot, type StepOptions } from '../optim/optimizer.js';
import { adamwReference } from '../backend/reference/optim.js';
import { span } from '../backend/native-optim.js';
import { markWeightsUpdated } from '../backend/lowp-tensor.js';
import type { Segment } from '../io/checkpoint.js';
import type { OptimizerMeta, RangeSource } from '../optim/state-segments.js';
import { OffloadStore, DEFAULT_CHUNK, type Part } from './offload-store.js';

export interface OffloadOptions {
  dir: string;
  rank: number;
  /** Elements per chunk (a multiple of 64). */
  chunk?: number;
}

interface Job {
  slot: Slot;
  group: ParamGroup<AdamWHyper>;
  region: number;
  start: number;
  len: number;
  g: { data: Float32Array; off: number };
  gradScale: number;
}

export class OffloadAdamW extends AdamW {
  readonly store: OffloadStore;
  private readonly regionOf = new Map<Slot, number>();
  private readonly bufs: [Float32Array, Float32Array];

  constructor(params: readonly ParamLike[] | readonly ParamGroupSpec<AdamWHyper>[], defaults: Partial<AdamWHyper>, opts: OffloadOptions) {
    super(params, defaults);
    const chunk = opts.chunk ?? DEFAULT_CHUNK;
    this.store = new OffloadStore(opts.dir, opts.rank, chunk);
    for (const s of this.slots()) {
      if (s.param.dtype !== 'float32') throw new Error(`parallel.offload=disk: parameter '${s.name}' is ${s.param.dtype}; offload streams float32 state`);
      this.regionOf.set(s, this.store.addRegion(s.end - s.start));
    }
    const largest = Math.max(0, ...this.slots().map((s) => s.end - s.start));
    const n = 3 * Math.min(chunk, Math.max(64, largest));
    this.bufs = [new Float32Array(n), new Float32Array(n)];
    this.writeMasters(() => null);
  }

  /** Bytes of optimizer state this rank keeps in memory (the two chunk buffers). */
  get residentBytes(): number {
    return this.bufs[0].byteLength + this.bufs[1].byteLength;
  }

  /**
   * (Re)writes every chunk: master from the compute copy, moments from `moments`
   * (null: zeros). Used at construction and after a checkpoint load replaced both.
   */
  private writeMasters(moments: (slot: Slot, part: 'exp_avg' | 'exp_avg_sq', start: number, out: Float32Array) => boolean | null): void {
    const buf = this.bufs[0];
    for (const s of this.slots()) {
      const r = this.regionOf.get(s)!;
      const p = slotParam(s);
      for (const { start, len } of this.store.chunks(r)) {
        buf.set((p.data as Float32Array).subarray(p.off + start, p.off + start + len), 0);
        for (const [k, part] of (['exp_avg', 'exp_avg_sq'] as const).entries()) {
          const out = buf.subarray((k + 1) * len, (k + 2) * len);
          if (!moments(s, part, start, out)) out.fill(0);
        }
        this.store.writeChunkSync(r, start, len, buf);
      }
    }
  }

  override step(): void {
    throw new Error('OffloadAdamW: the state is on disk; call stepAsync() (DataParallel does)');
  }

  override stateDict(): OptimizerStateDict {
    throw new Error(`OffloadAdamW: the moments live in ${this.store.path}; use checkpointSegments() / loadCheckpoint()`);
  }

  /** One AdamW update of every slot that has a gradient, streamed through the offload file. */
  async stepAsync(opts: StepOptions = {}): Promise<void> {
    const gradScale = opts.gradScale ?? 1;
    this.stepCount++;
    const jobs: Job[] = [];
    for (const group of this.paramGroups) {
      for (const slot of group.slots) {
        const g = slotGrad(slot);
        if (!g) continue;
        slot.step++;
        const region = this.regionOf.get(slot)!;
        for (const { start, len } of this.store.chunks(region)) jobs.push({ slot, group, region, start, len, g: g as Job['g'], gradScale });
      }
    }
    const writes: (Promise<void> | null)[] = [null, null];
    let next: Promise<void> | null = jobs.length ? this.store.readChunk(jobs[0]!.region, jobs[0]!.start, jobs[0]!.len, this.bufs[0]) : null;
    try {
      for (let i = 0; i < jobs.length; i++) {
        const j = jobs[i]!, buf = this.bufs[i % 2]!;
        await next;
        const after = jobs[i + 1];
        if (after) {
          // The other buffer is free once chunk i-1's write-back finished.
          const b = (i + 1) % 2;
          const prior = writes[b];
          next = (prior ?? Promise.resolve()).then(() => this.store.readChunk(after.region, after.start, after.len, this.bufs[b]!));
        }
        this.update(j, buf);
        writes[i % 2] = this.store.writeChunk(j.region, j.start, j.len, buf);
      }
    } finally {
      // Leave no I/O in flight on a buffer the next step reuses, even after an error.
      await Promise.allSettled([next, ...writes]);
    }
    await Promise.all(writes);
    markWeightsUpdated();
  }

  private update(j: Job, buf: Float32Array): void {
    const { slot, group, start, len } = j;
    const [beta1, beta2] = group.betas;
    const t = slot.step;
    const decay = 1 - group.lr * group.weightDecay;
    const stepSize = group.lr / (1 - beta1 ** t);
    const bc2Sqrt = Math.sqrt(1 - beta2 ** t);
    const master = buf.subarray(0, len), m = buf.subarray(len, 2 * len), v = buf.subarray(2 * len, 3 * len);
    const gOff = j.g.off + start;
    // Native or reference by the slot's size, as AdamW decides, so both paths agree bit for bit.
    const nat = this.native(slot);
    if (nat) {
      nat.adamw(master, span(j.g.data, gOff, len), m, v, len, decay, beta1, 1 - beta1, beta2, 1 - beta2, group.eps, stepSize, bc2Sqrt, j.gradScale);
    } else {
      adamwReference(master, 0, j.g.data, gOff, m, v, len, { decay, beta1, beta2, eps: group.eps, stepSize, bc2Sqrt, gradScale: j.gradScale });
    }
    const p = slotParam(slot);
    (p.data as Float32Array).set(master, p.off + start);
  }

  /**
   * Checkpoint segments of the moments, read from the file in pieces while the
   * checkpoint is written (io/checkpoint.ts), so a save never holds them in memory.
   * `locate` gives a slot's logical shape and where its element 0 sits in the tensor.
   */
  checkpointSegments(locate: (slot: Slot) => { shape: number[]; offset: number }): Segment[] {
    const out: Segment[] = [];
    for (const s of this.slots()) {
      if (s.step === 0) continue;
      const { shape, offset } = locate(s);
      const r = this.regionOf.get(s)!;
      for (const part of ['exp_avg', 'exp_avg_sq'] as Part[]) {
        const lo = offset + s.start;
        out.push({
          name: `optim.${part}.${s.name}`, shape, dtype: 'float32', start: lo, end: lo + (s.end - s.start), data: new Float32Array(0),
          read: (start: number, dst: Float32Array) => this.store.readPartSync(r, part, start, dst), // start is segment-relative
        });
      }
    }
    return out;
  }

  /**
   * Restores step counts and moments from a checkpoint of any layout (one slot's range
   * in memory at a time) and rewrites every master from the freshly loaded parameters.
   */
  loadCheckpoint(r: RangeSource, meta: OptimizerMeta | undefined, offsetOf: (slot: string) => number = () => 0): void {
    for (const s of this.slots()) {
      s.step = meta ? meta.slotSteps[s.name] ?? (r.has(`optim.exp_avg.${s.name}`) ? meta.stepCount : 0) : 0;
    }
    let cur: { slot: Slot; m: Float32Array; v: Float32Array } | null = null;
    this.writeMasters((slot, part, start, out) => {
      if (slot.step === 0) return null;
      if (cur?.slot !== slot) {
        const lo = offsetOf(slot.name) + slot.start, hi = lo + (slot.end - slot.start);
        cur = { slot, m: r.readRange(`optim.exp_avg.${slot.name}`, lo, hi) as Float32Array, v: r.readRange(`optim.exp_avg_sq.${slot.name}`, lo, hi) as Float32Array };
      }
      out.set((part === 'exp_avg' ? cur.m : cur.v).subarray(start, start + out.length));
      return true;
    });
    if (meta) {
      this.stepCount = meta.stepCount;
      meta.groups.forEach((g, i) => { if (this.paramGroups[i]) this.paramGroups[i]!.lr = g.lr; });
    }
  }

  describe(): string {
    return `offloaded to ${this.store.path} (${(this.store.bytes / 2 ** 20).toFixed(1)} MiB: fp32 master + exp_avg + exp_avg_sq, streamed in chunks of ${this.store.chunk} elements through ${(this.residentBytes / 2 ** 20).toFixed(1)} MiB of buffers)`;
  }
}
