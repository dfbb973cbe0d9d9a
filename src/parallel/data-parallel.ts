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
import type { GPT } from '../nn/gpt.js';
import type { TrainConfig } from '../train/config.js';
import type { TrainState } from '../train/train-checkpoint.js';
import { saveCheckpoint, optimizerSegments, optimizerMeta, loadParams, loadOptimizer } from '../train/train-checkpoint.js';
import { CheckpointReader, type Segment } from '../io/checkpoint.js';
import { nameParameters, newAdamW, setLr, type TrainOptimizer } from '../train/optim-setup.js';
import { gradSumSquares, clipCoefficient, type AdamW, type ParamSegment } from '../optim/index.js';
import type { DistSync } from '../train/dist-setup.js';
import { initProcessGroup, type ProcessGroup } from '../runtime/init.js';
import { CommThread, sharedF32 } from '../runtime/comm-thread.js';
import { evenCounts } from '../runtime/collectives.js';
import { Zero3 } from './zero3.js';

export interface Bucket {
  /** Position in FlatLayout.buckets. */
  index: number;
  /** Flat element range [lo, hi). */
  lo: number;
  hi: number;
  params: Tensor[];
  /** Elements of the bucket each rank owns (ZeRO partition). */
  counts: number[];
  pending: number;
  /** In-flight reduction of this step. */
  work: Promise<void> | null;
}

export interface FlatLayout {
  named: [string, Tensor][];
  offsets: Map<Tensor, number>;
  total: number;
  buckets: Bucket[];
  bucketOf: Map<Tensor, Bucket>;
}

/**
 * Flat layout and buckets. With `units` (ZeRO-3) each unit is exactly one bucket, so
 * gathering a unit is one all-gather; otherwise buckets fill up to bucketElems.
 */
export function planBuckets(named: [string, Tensor][], world: number, bucketElems: number, units?: Tensor[][]): FlatLayout {
  const offsets = new Map<Tensor, number>();
  let total = 0;
  for (const [, p] of named) { offsets.set(p, total); total += p.size; }
  const buckets: Bucket[] = [];
  const bucketOf = new Map<Tensor, Bucket>();
  let cur: Tensor[] = [];
  let curHi = total, curN = 0;
  const flush = () => {
    if (!cur.length) return;
    const lo = curHi - curN;
    const b: Bucket = { index: buckets.length, lo, hi: curHi, params: cur, counts: evenCounts(curN, world), pending: cur.length, work: null };
    for (const p of cur) bucketOf.set(p, b);
    buckets.push(b);
    curHi = lo; curN = 0; cur = [];
  };
  const unitOf = new Map<Tensor, number>();
  units?.forEach((u, i) => u.forEach((p) => unitOf.set(p, i)));
  for (let i = named.length - 1; i >= 0; i--) {
    const p = named[i]![1];
    if (units && cur.length && unitOf.get(cur[0]!) !== unitOf.get(p)) flush();
    cur.push(p);
    curN += p.size;
    if (!units && curN >= bucketElems) flush();
  }
  flush();
  return { named, offsets, total, buckets, bucketOf };
}

/** This rank's flat shard ranges (one per bucket). */
export function shardRanges(layout: FlatLayout, rank: number): [number, number][] {
  return layout.buckets.map((b) => {
    let off = b.lo;
    for (let r = 0; r < rank; r++) off += b.counts[r]!;
    return [off, off + b.counts[rank]!] as [number, number];
  });
}

/** Where each bucket's slice starts inside this rank's concatenated shard. */
export function shardOffsets(ranges: [number, number][]): number[] {
  const out: number[] = [];
  let off = 0;
  for (const [lo, hi] of ranges) { out.push(off); off += hi - lo; }
  return out;
}

/** Optimizer segments (param-relative) for flat ranges. */
export function segmentsFor(layout: FlatLayout, ranges: [number, number][]): ParamSegment[] {
  const out: ParamSegment[] = [];
  for (const [lo, hi] of ranges) {
    for (const [, p] of layout.named) {
      const base = layout.offsets.get(p)!;
      const a = Math.max(lo, base), b = Math.min(hi, base + p.size);
      if (a < b) out.push({ param: p, start: a - base, end: b - base });
    }
  }
  return out;
}

export class DataParallel implements DistSync {
  readonly rank: number;
  readonly world: number;
  private layout!: FlatLayout;
  private flatParams!: Float32Array;
  private flatGrads: Float32Array | null = null;
  private shardGrad: Float32Array | null = null;
  private staging: Float32Array[] = [];
  private stagingReq: number[] = [];
  private stagingNext = 0;
  private ranges: [number, number][] = [];
  private shardOff: number[] = [];
  private readonly scalar = sharedF32(1);
  private zero3: Zero3 | null = null;
  private readonly gatherIn: Float32Array[] = [];
  private model!: GPT;

  constructor(readonly cfg: TrainConfig, readonly pg: ProcessGroup, readonly comm: CommThread) {
    this.rank = pg.rank;
    this.world = pg.size;
  }

  get stage(): 0 | 1 | 2 | 3 {
    return this.cfg.parallel.zero;
  }

  setupModel(model: GPT): void {
    this.model = model;
    let named = nameParameters(model);
    for (const [n, p] of named) if (p.dtype !== 'float32') throw new Error(`data parallel: parameter ${n} is ${p.dtype}; only float32 is supported`);
    let units: Tensor[][] | undefined;
    if (this.stage === 3) {
      // Units: one per block, plus the embeddings/final norm/head, laid out first.
      const blocks = model.h.map((b) => new Set(b.parameters()));
      const inBlock = new Set(blocks.flatMap((b) => [...b]));
      const outer = named.filter(([, p]) => !inBlock.has(p));
      named = [...outer, ...named.filter(([, p]) => inBlock.has(p))];
      units = [outer.map(([, p]) => p), ...blocks.map((b) => [...b])];
    }
    this.layout = planBuckets(named, this.world, Math.max(1, Math.floor((this.cfg.parallel.bucketMB * 1024 * 1024) / 4)), units);
    this.ranges = shardRanges(this.layout, this.rank);
    this.shardOff = shardOffsets(this.ranges);
    // Every rank starts from rank 0's initial weights (they are equal by seed, but this makes it a guarantee).
    this.flatParams = sharedF32(this.layout.total);
    for (const [, p] of named) this.flatParams.set(p.data as Float32Array, this.layout.offsets.get(p)!);
    if (this.stage >= 2) {
      const n = this.ranges.reduce((s, [lo, hi]) => s + hi - lo, 0);
      this.shardGrad = sharedF32(n);
      const maxBucket = Math.max(...this.layout.buckets.map((b) => b.hi - b.lo));
      this.staging = [sharedF32(maxBucket), sharedF32(maxBucket)];
      this.stagingReq = [0, 0];
    } else {
      this.flatGrads = sharedF32(this.layout.total);
    }
    for (const [, p] of named) {
      const off = this.layout.offsets.get(p)!;
      p.box.data = this.flatParams.subarray(off, off + p.size);
      if (this.flatGrads) {
        const g = fromStorage(this.flatGrads.subarray(off, off + p.size), p.shape, 'float32');
        g.kept = true;
        p.grad = g;
      }
    }
    if (this.stage === 3) this.zero3 = new Zero3(this, model, this.layout, this.flatParams, this.ranges);
  }

  describe(): string {
    const m = this.memoryReport();
    const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    return `data parallel: ${this.world} ranks, ZeRO-${this.stage}, ${this.layout.buckets.length} gradient bucket(s), ${this.pg.backend} transport (gradient thread: ${this.comm.backend}); ` +
      `per-rank state: weights ${mb(m.weights)}, grads ${mb(m.grads)}, AdamW ${mb(m.optimizer)} (total ${mb(m.weights + m.grads + m.optimizer)})`;
  }

  /** Bytes this rank keeps between steps, by kind (the ZeRO memory report). */
  memoryReport(): { weights: number; grads: number; optimizer: number } {
    const own = this.ranges.reduce((s, [lo, hi]) => s + hi - lo, 0);
    const full = this.layout.total;
    return {
      weights: 4 * (this.stage === 3 ? own : full),
      grads: 4 * (this.stage >= 2 ? own : full),
      optimizer: 8 * (this.stage >= 1 ? own : full),
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
    const b = this.layout.bucketOf.get(p);
    if (!b) return;
    if (--b.pending === 0) this.launch(b);
  };

  /** Starts a bucket's reduction on the communication thread. */
  launch(b: Bucket): void {
    if (this.stage < 2) {
      b.work = this.comm.allReduce(this.flatGrads!.subarray(b.lo, b.hi), { op: 'avg', deterministic: this.cfg.parallel.deterministic }).done;
      return;
    }
    const slot = this.stagingNext;
    this.stagingNext = 1 - slot;
    if (this.stagingReq[slot]) this.comm.waitSync(this.stagingReq[slot]!);
    const st = this.staging[slot]!.subarray(0, b.hi - b.lo);
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
    const [lo, hi] = this.ranges[b.index]!;
    const off = this.shardOff[b.index]!;
    const out = this.shardGrad!.subarray(off, off + (hi - lo));
    const req = this.comm.reduceScatterV(st, out, b.counts, 'avg');
    this.stagingReq[slot] = req.id;
    b.work = req.done;
  }

  async finish(): Promise<void> {
    for (const b of this.layout.buckets) {
      if (!b.work) this.launch(b); // parameters that took no part in this step's graph
    }
    await Promise.all(this.layout.buckets.map((b) => b.work));
    for (const b of this.layout.buckets) { b.work = null; b.pending = b.params.length; }
    this.zero3?.afterBackward();
  }

  buildOptimizer = (model: GPT, cfg: TrainConfig): TrainOptimizer => {
    const named = this.layout.named;
    const segs = segmentsFor(this.layout, this.ranges);
    if (this.stage === 0) {
      // The norm is summed over the same shards as ZeRO's, so every stage clips identically.
      const params = named.map(([, p]) => p);
      const adamw = newAdamW(params, cfg.optim);
      return this.optimizerFor(adamw, async () => this.allSum(gradSumSquares(segs)), async () => undefined);
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
        const o = byParam.get(s.param)!;
        s.grad = fromStorage(this.shardGrad!.subarray(o, o + (s.end - s.start)), [s.end - s.start], 'float32');
      }
    }
    const zero3 = this.zero3;
    const adamw = newAdamW(segs, cfg.optim, zero3 ? (ps) => zero3.shardSegments(ps as ParamSegment[]) : undefined);
    const sumSq = () => gradSumSquares(segs.map((s) => ({ param: s.param, start: s.start, end: s.end, grad: s.grad })));
    return this.optimizerFor(adamw, async () => this.allSum(sumSq()), () => this.gatherParams());
  };

  private optimizerFor(adamw: AdamW, sumSquares: () => number | Promise<number>, after: () => Promise<void>): TrainOptimizer {
    return {
      adamw,
      step: async (lr, maxNorm) => {
        const norm = Math.sqrt(await sumSquares());
        if (!Number.isFinite(norm)) {
          this.zeroGrads(adamw);
          return { gradNorm: norm, applied: false };
        }
        setLr(adamw, lr);
        adamw.step({ gradScale: maxNorm > 0 ? clipCoefficient(norm, maxNorm) : 1 });
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
    if (this.zero3) return;
    const works: Promise<void>[] = [];
    this.layout.buckets.forEach((b, i) => {
      const [lo, hi] = this.ranges[i]!;
      // The gather's input must not alias its output, so each rank's slice goes through a
      // (reused) shared staging buffer.
      const mine = (this.gatherIn[i] ??= sharedF32(hi - lo));
      mine.set(this.flatParams.subarray(lo, hi));
      works.push(this.comm.allGatherV(mine, this.flatParams.subarray(b.lo, b.hi), b.counts).done);
    });
    await Promise.all(works);
  }

  private async allSum(x: number): Promise<number> {
    const buf = this.scalar;
    buf[0] = x;
    await this.comm.allReduce(buf, 'sum').wait();
    return buf[0]!;
  }

  async meanScalar(x: number): Promise<number> {
    const buf = new Float32Array([x]);
    await this.pg.allReduce(buf, { op: 'avg', deterministic: this.cfg.parallel.deterministic }).wait();
    return buf[0]!;
  }

  async barrier(): Promise<void> {
    await this.pg.barrier().wait();
  }

  saveCheckpoint = async (root: string, model: GPT, optim: TrainOptimizer, st: TrainState): Promise<string> => {
    const segs: Segment[] = [];
    if (this.zero3) segs.push(...this.zero3.paramSegments());
    else if (this.rank === 0) {
      for (const [name, p] of this.layout.named) segs.push({ name, shape: [...p.shape], dtype: 'float32', start: 0, end: p.size, data: p.data.subarray(p.offset, p.offset + p.size) });
    }
    segs.push(...(this.zero3 ? this.zero3.optimizerSegments(optim.adamw) : optimizerSegments(optim.adamw)));
    return saveCheckpoint(root, { ...st, optimizer: optimizerMeta(optim.adamw) }, segs, { rank: this.rank, world: this.world, barrier: () => this.barrier() });
  };

  loadCheckpoint = (dir: string, model: GPT, optim: TrainOptimizer): TrainState => {
    const r = new CheckpointReader(dir);
    try {
      const st = r.state as TrainState;
      if (this.zero3) this.zero3.loadParams(r);
      else loadParams(r, this.layout.named);
      if (st.optimizer) loadOptimizer(r, optim.adamw, st.optimizer, this.zero3 ? (n) => this.zero3!.slotOffset(n) : undefined);
      return st;
    } finally {
      r.close();
    }
  };

  async close(): Promise<void> {
    await this.comm.close();
    await this.pg.destroy();
  }
}

export async function dataParallelSync(cfg: TrainConfig): Promise<DistSync> {
  const pg = await initProcessGroup();
  const { tp, pp } = cfg.parallel;
  if (tp !== 1 || pp !== 1) {
    throw new Error(`rank ${pg.rank}: parallel.tp=${tp}, parallel.pp=${pp}: athanor train runs data parallelism (with ZeRO); set parallel.dp to the world size (${pg.size}) and tp = pp = 1`);
  }
  if (cfg.parallel.dp !== pg.size) throw new Error(`rank ${pg.rank}: parallel.dp is ${cfg.parallel.dp} but ${pg.size} ranks were started; pass --parallel.dp=${pg.size}`);
  const comm = await CommThread.start(pg);
  return new DataParallel(cfg, pg, comm);
}
