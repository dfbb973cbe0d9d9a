// Data parallelism with ZeRO stages 0-3, applied to a plain model from outside.
//
// Parameters are re-homed into one flat SharedArrayBuffer (ordered as
// model.namedParameters()), so collectives work on contiguous ranges and the
// communication thread (comm-thread.ts) sees the same memory. Buckets of ~bucketMB
// are contiguous flat ranges in reverse parameter order (the order backward
// finishes them); each bucket is split evenly over ranks, and a rank's ZeRO shard
// is its slice of every bucket. Per stage:
//   0  grads live in a flat shared buffer; each full bucket is all-reduced (avg) on
//      the comm thread while backward continues.
//   1  as 0, but AdamW state and updates cover only this rank's shard; updated
//      slices are all-gathered back into every rank's parameters.
//   2  grads are not kept: a finished bucket is copied into a staging buffer,
//      reduce-scattered into this rank's shard gradient, and the full-size
//      gradients go back to the pool.
//   3  as 2, and each rank stores only its shard of the parameters; see zero3.ts.
import type { Tensor } from '../core/tensor.js';
import { fromStorage } from '../core/tensor.js';
import type { Rng } from '../core/rng.js';
import type { Module } from '../nn/module.js';
import type { Segment } from '../io/checkpoint.js';
import { gradSumSquares, clipCoefficient, type AdamW, type ParamLike, type ParamSegment } from '../optim/index.js';
import { optimizerSegments, loadParams, loadOptimizer, type OptimizerMeta, type RangeSource } from '../optim/state-segments.js';
import { sharedF32 } from '../runtime/comm-thread.js';
import type { Work } from '../runtime/communicator.js';
import { planBuckets, shardRanges, shardOffsets, segmentsFor, type Bucket, type FlatLayout } from './flat-buckets.js';
import type { GradComm } from './grad-comm.js';
export type { GradComm } from './grad-comm.js';
import { pool } from '../core/buffer-pool.js';
import { Zero3 } from './zero3.js';
import { OffloadAdamW } from './offload-optimizer.js';
import { initSpecs } from '../nn/module.js';
import { fillInit } from '../nn/materialize.js';

export interface ReplicateOptions {
  /** ZeRO stage: 0 replicate everything, 1 shard optimizer state, 2 + gradients, 3 + parameters. */
  zero: 0 | 1 | 2 | 3;
  bucketMB: number;
  /** Fixed reduction order (bit-identical results whatever the arrival order). */
  deterministic: boolean;
  /** ZeRO-3: submodules whose parameters are gathered around their forward (e.g. transformer blocks); the rest form one outer unit. */
  units?: Module[];
  /** ZeRO-3 recomputes each unit in backward: the RNG to replay (dropout masks). */
  rng?: Rng;
  /** Transport name for describe(). */
  transport?: string;
  /** ZeRO-3 over a model built on the meta device: the seed of its per-parameter init streams (materialize.ts). */
  seed?: number;
  /** ZeRO-3: start the next unit's all-gather while the current one computes (default true; one more unit of memory). */
  prefetch?: boolean;
  /** HSDP (hsdp.ts): `comm`/`rank`/`world` are this rank's shard group, and this is its replica
   *  group, over which each reduce-scattered shard gradient is then averaged. */
  replica?: { comm: GradComm; rank: number; size: number };
}

/** The optimizer a parallel transform builds: AdamW over this rank's part plus a clipped, finite-checked step. */
export interface ShardedOptimizer {
  readonly adamw: AdamW;
  step(lr: number, maxNorm: number): Promise<{ gradNorm: number; applied: boolean }>;
  zeroGrad(): void;
}

/** How the caller builds AdamW (parameter groups and hyper-parameters are the trainer's business). */
export type AdamWFactory = (params: readonly ParamLike[], relocate?: (ps: ParamLike[]) => ParamLike[]) => AdamW;

export interface OptimizerOptions {
  makeAdamW: AdamWFactory;
  /** Whether a parameter's gradient counts in this rank's part of the global norm
   *  (tensor parallel: replicated parameters count on one rank of the group). Default: all. */
  countInNorm?: (p: Tensor) => boolean;
  /** Sums this rank's squared-gradient total over every rank that holds other parts of
   *  the model (tensor / pipeline groups), after the data-parallel sum. Default: identity. */
  sumOutsideDp?: (x: number) => Promise<number>;
}

/**
 * Data parallelism (and ZeRO 1-3) over one module and the data-parallel group: the
 * `replicate` / `fully-shard` transforms. Knows nothing of the model beyond its named
 * parameters and, for ZeRO-3, which submodules form gather units.
 */
export class DataParallel {
  private readonly layout: FlatLayout;
  /** The full flat parameters (ZeRO 0-2 only: ZeRO-3 ranks never hold them). */
  private readonly flatParams: Float32Array | null = null;
  private flatGrads: Float32Array | null = null;
  private shardGrad: Float32Array | null = null;
  private staging: Float32Array[] = [];
  private stagingReq: (Work | null)[] = [];
  private stagingNext = 0;
  private readonly ranges: [number, number][];
  private readonly shardOff: number[];
  private readonly zero3: Zero3 | null = null;
  private readonly gatherIn: Float32Array[] = [];
  /** The optimizer buildOptimizer made (its state buffers count in memoryReport). */
  private adamw: AdamW | null = null;

  constructor(readonly module: Module, readonly comm: GradComm, readonly rank: number, readonly world: number, readonly opts: ReplicateOptions) {
    let named = module.namedParameters();
    for (const [n, p] of named) {
      p.name = n;
      if (p.dtype !== 'float32') throw new Error(`data parallel: parameter ${n} is ${p.dtype}; only float32 is supported`);
    }
    let units: Tensor[][] | undefined;
    if (this.stage === 3) {
      // Units: the outer one (parameters of no listed submodule) first, then one per submodule.
      const blocks = (opts.units ?? []).map((m) => new Set(m.parameters()));
      const inBlock = new Set(blocks.flatMap((b) => [...b]));
      const outer = named.filter(([, p]) => !inBlock.has(p));
      named = [...outer, ...named.filter(([, p]) => inBlock.has(p))];
      units = [outer.map(([, p]) => p), ...blocks.map((b) => [...b])].filter((u) => u.length > 0);
    }
    this.layout = planBuckets(named, this.world, Math.max(1, Math.floor((opts.bucketMB * 1024 * 1024) / 4)), units);
    this.ranges = shardRanges(this.layout, this.rank);
    this.shardOff = shardOffsets(this.ranges);
    if (this.stage < 3) {
      this.flatParams = sharedF32(this.layout.total);
      for (const [, p] of named) {
        const off = this.layout.offsets.get(p)!;
        if (p.box.meta) {
          // A model built on the meta device (offload does this, so the full model is never
          // allocated twice): each parameter is drawn from its own init stream straight into the flat buffer.
          const init = initSpecs.get(p);
          if (!init || opts.seed === undefined) throw new Error(`data parallel: parameter '${p.name}' is on the meta device without a recorded initializer and seed`);
          fillInit(this.flatParams.subarray(off, off + p.size), init, opts.seed, p.name!, [{ start: 0, length: p.size }]);
          p.box.meta = false;
        } else this.flatParams.set(p.data as Float32Array, off);
      }
    }
    if (this.stage >= 2) {
      const n = this.ranges.reduce((s, [lo, hi]) => s + hi - lo, 0);
      this.shardGrad = sharedF32(n);
      const maxBucket = Math.max(...this.layout.buckets.map((b) => b.hi - b.lo));
      this.staging = [sharedF32(maxBucket), sharedF32(maxBucket)];
      this.stagingReq = [null, null];
    } else {
      this.flatGrads = sharedF32(this.layout.total);
    }
    for (const [, p] of named) {
      const off = this.layout.offsets.get(p)!;
      if (this.flatParams) p.box.data = this.flatParams.subarray(off, off + p.size);
      if (this.flatGrads) {
        const g = fromStorage(this.flatGrads.subarray(off, off + p.size), p.shape, 'float32');
        g.kept = true;
        p.grad = g;
      }
    }
    if (this.stage === 3) {
      this.zero3 = new Zero3(this, opts.units ?? [], this.layout, this.ranges, opts.rng, opts.seed);
      this.zero3.prefetchOn = opts.prefetch ?? true;
    }
  }

  get stage(): 0 | 1 | 2 | 3 {
    return this.opts.zero;
  }

  /** The parameters in flat-layout order, named. */
  get named(): [string, Tensor][] {
    return this.layout.named;
  }

  describe(): string {
    const m = this.memoryReport();
    const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    const f = m.formula;
    const gathered = this.zero3 ? `, gather buffers ${mb(m.gathered + m.gatherPooled)} (bound: ${this.zero3?.prefetchOn ? '2 × largest unit (one computing, one prefetched)' : 'largest unit'} + outer unit = ${mb(m.unitBound)})` : '';
    const rep = this.opts.replica;
    const ranks = rep && rep.size > 1 ? `${this.world * rep.size} ranks, HSDP: sharded over groups of ${this.world} × ${rep.size} replica groups` : `${this.world} ranks`;
    return `data parallel: ${ranks}, ZeRO-${this.stage}, ${this.layout.buckets.length} gradient bucket(s), ${this.opts.transport ?? 'socket'} transport (gradient thread: ${this.comm.backend ?? 'none'}); ` +
      `per-rank state, allocated: weights ${mb(m.weights)}, grads ${mb(m.grads)}, AdamW ${mb(m.optimizer)}${this.adamw instanceof OffloadAdamW ? ` (${this.adamw.describe()})` : this.adamw ? '' : ' (before the first step)'}${gathered}; ` +
      `formula: weights ${mb(f.weights)}, grads ${mb(f.grads)}, AdamW ${mb(f.optimizer)} (total ${mb(f.weights + f.grads + f.optimizer)}); ` +
      `process array buffers ${mb(m.arrayBuffers)}, tensor pool idle ${mb(m.bufferPool)}`;
  }

  /**
   * Bytes this rank holds, measured from what is allocated (not derived): parameter
   * storage (full flat buffer, or the ZeRO-3 shard), gradient buffers (flat grads, or
   * the shard gradient plus the reduce-scatter staging pair), AdamW state buffers, the
   * ZeRO-3 gather allocator's counters, the tensor pool's idle bytes and the process's
   * array-buffer total. `formula` is the ZeRO paper's per-rank figure beside them.
   */
  memoryReport(): {
    weights: number; grads: number; optimizer: number;
    gathered: number; gatherPooled: number; peakGathered: number; gatherAllocated: number; unitBound: number;
    bufferPool: number; arrayBuffers: number;
    formula: { weights: number; grads: number; optimizer: number };
  } {
    const own = this.ranges.reduce((s, [lo, hi]) => s + hi - lo, 0);
    const full = this.layout.total;
    const z = this.zero3?.memory();
    const u = this.zero3?.unitElements();
    let optimizer = 0;
    for (const sl of this.adamw?.slots() ?? []) for (const a of Object.values(sl.state)) optimizer += a.byteLength;
    return {
      weights: this.flatParams?.byteLength ?? z?.shard ?? 0,
      grads: (this.flatGrads?.byteLength ?? 0) + (this.shardGrad?.byteLength ?? 0) + this.staging.reduce((s, b) => s + b.byteLength, 0),
      optimizer,
      gathered: z?.gathered ?? 0,
      gatherPooled: z?.pooled ?? 0,
      peakGathered: z?.peakGathered ?? 0,
      gatherAllocated: z?.allocated ?? 0,
      unitBound: u ? 4 * ((this.zero3!.prefetchOn ? 2 : 1) * u.largest + u.outer) : 0,
      bufferPool: pool.stats().pooledBytes,
      arrayBuffers: process.memoryUsage().arrayBuffers,
      formula: {
        weights: 4 * (this.stage === 3 ? own : full),
        grads: 4 * (this.stage >= 2 ? own : full),
        optimizer: 8 * (this.stage >= 1 ? own : full),
      },
    };
  }

  beforeForward(lastMicro = true): void {
    this.zero3?.beforeForward(lastMicro);
  }

  afterEval(): void {
    this.zero3?.afterBackward();
  }

  /** Backward's gradient-ready hook; ZeRO-3 launches reductions from its block wrapper instead. */
  get onGradReady(): ((p: Tensor) => void) | undefined {
    return this.stage === 3 ? undefined : this.gradReady;
  }

  private readonly gradReady = (p: Tensor): void => {
    if (this.waiting.length) this.flushWaiting(false);
    const b = this.layout.bucketOf.get(p);
    if (!b) return;
    if (--b.pending === 0) this.launch(b);
  };

  /** Starts a bucket's reduction on the communication thread. */
  launch(b: Bucket): void {
    if (this.stage < 2) {
      b.work = this.comm.allReduce(this.flatGrads!.subarray(b.lo, b.hi), { op: 'avg', deterministic: this.opts.deterministic }).wait();
      return;
    }
    if (this.stage === 2 && this.comm.testSync) {
      // ZeRO-2: a finished bucket waits, gradients kept, for a free staging buffer instead of
      // blocking backward until the reduce-scatter two buckets back completed (on a loaded
      // or 2-core machine the communication thread and the other rank are often late, and a
      // blocked backward was most of ZeRO-2's extra step time over ZeRO-1). Buckets start in
      // the order they finished, the same on every rank.
      this.waiting.push(b);
      this.flushWaiting(false);
      return;
    }
    this.stageAndReduce(b);
  }

  /** ZeRO-2 buckets whose gradients are complete, waiting for a staging buffer (in launch order). */
  private waiting: Bucket[] = [];

  /** Starts the waiting buckets while a staging buffer is free (`block`: waiting for one as needed). */
  private flushWaiting(block: boolean): void {
    while (this.waiting.length) {
      const prior = this.stagingReq[this.stagingNext];
      if (prior && !block && !this.comm.testSync!(prior)) return;
      this.stageAndReduce(this.waiting.shift()!);
    }
  }

  /** ZeRO-2: copies bucket b's gradients into the next staging buffer (freeing them) and reduce-scatters it. */
  private stageAndReduce(b: Bucket): void {
    const { slot, buf: st } = this.stagingFor(b);
    for (const p of b.params) {
      const off = this.layout.offsets.get(p)! - b.lo;
      if (p.grad) {
        st.set(p.grad.data.subarray(p.grad.offset, p.grad.offset + p.size) as Float32Array, off);
        p.grad.dispose();
        p.grad = null;
      } else {
        st.fill(0, off, off + p.size);
      }
    }
    this.reduceStaged(b, slot, st);
  }

  /**
   * ZeRO-2/3: the next of the two reduce-scatter staging buffers, cut to bucket b's size,
   * once the reduce-scatter that last read it finished. ZeRO-3 points a unit's gradients
   * straight at it before the unit's backward (zero3.ts), so they are never allocated in full.
   */
  stagingFor(b: Bucket): { slot: number; buf: Float32Array } {
    const slot = this.stagingNext;
    this.stagingNext = 1 - slot;
    const prior = this.stagingReq[slot];
    if (prior) { this.comm.waitSync(prior); this.stagingReq[slot] = null; }
    return { slot, buf: this.staging[slot]!.subarray(0, b.hi - b.lo) };
  }

  /** Reduce-scatters bucket b's gradients (filled into staging buffer `slot`) into this rank's shard gradient. */
  reduceStaged(b: Bucket, slot: number, st: Float32Array): void {
    const [lo, hi] = this.ranges[b.index]!;
    const off = this.shardOff[b.index]!;
    const out = this.shardGrad!.subarray(off, off + (hi - lo));
    const req = this.comm.reduceScatterV(st, out, b.counts, 'avg');
    this.stagingReq[slot] = req;
    const rep = this.opts.replica;
    if (!rep || rep.size === 1) { b.work = req.wait(); return; }
    // HSDP: average the shard gradient over the replica group once this rank's reduce-scatter
    // finished. The all-reduces are posted through one chain, in launch order, so every
    // member posts them in the same order whichever reduce-scatter finishes first.
    const rs = req.wait();
    // (The request is boxed: a Work is thenable, and returning it would chain on its completion.)
    const posted = this.replicaChain.then(() => rs).then(() => ({ req: rep.comm.allReduce(out, { op: 'avg', deterministic: this.opts.deterministic }) }));
    this.replicaChain = posted.then(() => undefined);
    b.work = posted.then(({ req: w }) => w.wait());
  }

  /** HSDP: the last replica all-reduce posted (the next one is posted after it). */
  private replicaChain: Promise<void> = Promise.resolve();

  /** Waits for every bucket's reduction (launching those no backward hook started). */
  async reduceGrads(): Promise<void> {
    this.flushWaiting(true);
    for (const b of this.layout.buckets) {
      if (!b.work) this.launch(b); // parameters that took no part in this step's graph
    }
    this.flushWaiting(true);
    await Promise.all(this.layout.buckets.map((b) => b.work));
    for (const b of this.layout.buckets) { b.work = null; b.pending = b.params.length; }
    this.zero3?.afterBackward();
  }

  /** AdamW over what this rank updates (ZeRO: its shard), with the global-norm clip. */
  buildOptimizer(o: OptimizerOptions): ShardedOptimizer {
    const named = this.layout.named;
    const segs = segmentsFor(this.layout, this.ranges);
    const counted = o.countInNorm ? (s: ParamSegment) => o.countInNorm!(s.param) : () => true;
    const normSum = async (local: number) => {
      const dp = await this.allSum(local);
      return o.sumOutsideDp ? o.sumOutsideDp(dp) : dp;
    };
    if (this.stage === 0) {
      // The norm is summed over the same shards as ZeRO's, so every stage clips identically.
      const params = named.map(([, p]) => p);
      const adamw = (this.adamw = o.makeAdamW(params));
      return this.optimizerFor(adamw, () => normSum(gradSumSquares(segs.filter(counted))), async () => undefined);
    }
    if (this.stage >= 2) {
      let off = 0;
      const byParam = new Map<Tensor, number>();
      for (const [lo, hi] of this.ranges) {
        for (const s of segmentsFor(this.layout, [[lo, hi]])) {
          byParam.set(s.param, off + (this.layout.offsets.get(s.param)! + s.start - lo));
        }
        off += hi - lo;
      }
      for (const s of segs) {
        const o2 = byParam.get(s.param)!;
        s.grad = fromStorage(this.shardGrad!.subarray(o2, o2 + (s.end - s.start)), [s.end - s.start], 'float32');
      }
    }
    const zero3 = this.zero3;
    const adamw = this.adamw = o.makeAdamW(segs, zero3 ? (ps) => zero3.shardSegments(ps as ParamSegment[]) : undefined);
    const sumSq = () => gradSumSquares(segs.filter(counted).map((s) => ({ param: s.param, start: s.start, end: s.end, grad: s.grad })));
    return this.optimizerFor(adamw, () => normSum(sumSq()), () => this.gatherParams());
  }

  private optimizerFor(adamw: AdamW, sumSquares: () => Promise<number>, after: () => Promise<void>): ShardedOptimizer {
    return {
      adamw,
      step: async (lr, maxNorm) => {
        const norm = Math.sqrt(await sumSquares());
        if (!Number.isFinite(norm)) {
          this.zeroGrads(adamw);
          return { gradNorm: norm, applied: false };
        }
        for (const g of adamw.paramGroups) g.lr = lr;
        const gradScale = maxNorm > 0 ? clipCoefficient(norm, maxNorm) : 1;
        // parallel.offload=disk: the update streams master weights and moments through the offload file.
        if (adamw instanceof OffloadAdamW) await adamw.stepAsync({ gradScale });
        else adamw.step({ gradScale });
        this.zeroGrads(adamw);
        await after();
        return { gradNorm: norm, applied: true };
      },
      zeroGrad: () => this.zeroGrads(adamw),
    };
  }

  private zeroGrads(adamw: AdamW): void {
    adamw.zeroGrad();
    this.flatGrads?.fill(0);
    this.shardGrad?.fill(0);
  }

  /** ZeRO-1/2: every rank updated its slices; all-gather them into everyone's parameters. */
  private async gatherParams(): Promise<void> {
    const flat = this.flatParams;
    if (this.zero3 || !flat) return;
    const works: Promise<void>[] = [];
    this.layout.buckets.forEach((b, i) => {
      const [lo, hi] = this.ranges[i]!;
      // The gather's input must not alias its output, so each rank's slice goes through a
      // (reused) shared staging buffer.
      const mine = (this.gatherIn[i] ??= sharedF32(hi - lo));
      mine.set(flat.subarray(lo, hi));
      works.push(this.comm.allGatherV(mine, flat.subarray(b.lo, b.hi), b.counts).wait());
    });
    await Promise.all(works);
  }

  private async allSum(x: number): Promise<number> {
    // The squared-gradient sum stays float64 (as in one process): every rank's value travels
    // as raw bits and is added up in rank order, so the clip factor matches single-process
    // training instead of differing in float32's last bits.
    if (this.world === 1) return x;
    const mine = (this.sumIn ??= new Int32Array(new SharedArrayBuffer(8)));
    const all = (this.sumAll ??= new Int32Array(new SharedArrayBuffer(8 * this.world)));
    new Float64Array(mine.buffer)[0] = x;
    await this.comm.allGatherV(mine, all, new Array<number>(this.world).fill(2)).wait();
    let s = 0;
    for (const v of new Float64Array(all.buffer)) s += v;
    return s;
  }
  private sumIn: Int32Array | null = null;
  private sumAll: Int32Array | null = null;

  /**
   * What this rank writes to a checkpoint, in the module's own (local) coordinates:
   * parameters (replica 0 writes them; ZeRO-3 ranks their shards) and AdamW moments.
   */
  checkpointSegments(adamw: AdamW): Segment[] {
    const segs: Segment[] = [];
    // HSDP: every replica group holds the same shards; the first writes them.
    if (this.zero3 && (this.opts.replica?.rank ?? 0) > 0) return segs;
    if (this.zero3) segs.push(...this.zero3.paramSegments());
    else if (this.rank === 0) {
      for (const [name, p] of this.layout.named) segs.push({ name, shape: [...p.shape], dtype: 'float32', start: 0, end: p.size, data: p.data.subarray(p.offset, p.offset + p.size) });
    }
    // Without ZeRO every replica holds the same moments: replica 0 writes them.
    if (adamw instanceof OffloadAdamW) {
      if (this.zero3 || this.stage > 0 || this.rank === 0) segs.push(...adamw.checkpointSegments((s) => this.offloadLocate(s.name)));
    } else if (this.zero3) segs.push(...this.zero3.optimizerSegments(adamw));
    else if (this.stage > 0 || this.rank === 0) segs.push(...optimizerSegments(adamw));
    return segs;
  }

  /** Reads this rank's parameters and optimizer state (local coordinates) from any layout's checkpoint. */
  loadCheckpoint(r: RangeSource, adamw: AdamW, meta: OptimizerMeta | undefined): void {
    if (this.zero3) this.zero3.loadParams(r);
    else loadParams(r, this.layout.named);
    const offsetOf = this.zero3 ? (n: string) => this.zero3!.slotOffset(n) : undefined;
    if (adamw instanceof OffloadAdamW) adamw.loadCheckpoint(r, meta, offsetOf); // also rewrites the on-disk masters from the loaded parameters
    else if (meta) loadOptimizer(r, adamw, meta, offsetOf);
  }

  /** Offloaded moments in checkpoint coordinates: the parameter's shape, and where a ZeRO-3 shard slot starts in it. */
  private offloadLocate(name: string): { shape: number[]; offset: number } {
    const p = this.layout.named.find(([n]) => n === name)?.[1];
    if (!p) throw new Error(`offload checkpoint: no parameter named '${name}'`);
    return { shape: [...p.shape], offset: this.zero3 ? this.zero3.slotOffset(name) : 0 };
  }
}

/** `replicate`: data parallelism (ZeRO 0-2) over the data-parallel group. */
export function replicate(module: Module, comm: GradComm, rank: number, world: number, opts: Omit<ReplicateOptions, 'units' | 'rng'> & { zero: 0 | 1 | 2 }): DataParallel {
  return new DataParallel(module, comm, rank, world, opts);
}

/** `fully-shard` (ZeRO-3): parameters live sharded and are gathered per unit around its forward. */
export function fullyShard(module: Module, comm: GradComm, rank: number, world: number, opts: Omit<ReplicateOptions, 'zero'> & { units: Module[] }): DataParallel {
  return new DataParallel(module, comm, rank, world, { ...opts, zero: 3 });
}
