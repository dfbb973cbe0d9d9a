// The multi-process ParallelLayer for `athanor train`: the world communicator, a mesh
// over ParallelDims (tp fastest, then dp, then pp), the communication thread over the
// data-parallel group, and the GPT plan (src/parallel/plans/gpt.ts) applied to a plain
// model. The trainer sees only the ParallelLayer interface.
import { GPT } from '../nn/gpt.js';
import { initProcessGroup, type ProcessGroup } from '../runtime/init.js';
import { CommThread } from '../runtime/comm-thread.js';
import { buildMesh, parseMeshOrder, type DeviceMesh } from '../parallel/mesh.js';
import { SingleMemberComm, type DataParallel, type GradComm } from '../parallel/data-parallel.js';
import { applyDataParallel, buildTensorParallelGpt } from '../parallel/plans/gpt.js';
import { ThreadGroup } from '../parallel/thread-group.js';
import { TensorParallelCheckpoint } from '../parallel/tp-checkpoint.js';
import type { Shard } from '../parallel/placement.js';
import type { Tensor } from '../core/tensor.js';
import { CheckpointReader } from '../io/checkpoint.js';
import { optimizerMeta } from '../optim/state-segments.js';
import { validateTrainConfig } from './config.js';
import type { TrainConfig } from './config.js';
import { saveCheckpoint, type TrainState } from './train-checkpoint.js';
import { newAdamW, type TrainOptimizer } from './optim-setup.js';
import { accumulationSchedule, type StepSchedule } from './step-schedule.js';
import type { ParallelLayer } from './parallel-layer.js';

export class DistributedLayer implements ParallelLayer {
  readonly rank: number;
  readonly world: number;
  readonly dataRank: number;
  readonly dataWorld: number;
  private dp: DataParallel | null = null;
  private readonly scalar = new Float32Array(1);
  /** Tensor-parallel placement of every split parameter (empty at tp = 1). */
  private shards = new Map<string, Shard>();
  private shardedParams = new Set<Tensor>();
  /** The tensor-parallel group's synchronous collectives (null at tp = 1). */
  readonly tpGroup: ThreadGroup | null;

  private constructor(readonly cfg: TrainConfig, readonly pg: ProcessGroup, readonly mesh: DeviceMesh,
    readonly comm: GradComm, private readonly threads: CommThread[], tpComm: GradComm | null) {
    this.rank = pg.rank;
    this.world = pg.size;
    this.dataRank = mesh.coords.dp;
    this.dataWorld = mesh.dims.dp;
    this.tpGroup = tpComm ? new ThreadGroup(tpComm, mesh.coords.tp, mesh.dims.tp) : null;
  }

  static async create(cfg: TrainConfig): Promise<DistributedLayer> {
    const pg = await initProcessGroup();
    const threads: CommThread[] = [];
    try {
      // Every invariant is checked here, before any thread starts or any model is allocated.
      validateTrainConfig(cfg, pg.size);
      const { tp, pp, dp } = cfg.parallel;
      if (pp !== 1) throw new Error(`rank ${pg.rank}: parallel.pp=${pp}: athanor train runs tensor and data parallelism; set parallel.pp=1`);
      if (tp > 1 && cfg.parallel.zero === 3) throw new Error(`parallel.zero=3 with parallel.tp=${tp}: ZeRO-3 is not combined with tensor parallelism; use parallel.zero=1 or 2 on the data-parallel dimension`);
      const mesh = buildMesh(pg, { tp, pp, dp, order: parseMeshOrder(cfg.parallel.order, 'parallel.order') });
      // One communication thread per parallel dimension in use, so the tensor-parallel
      // collectives (waited for inside forward/backward) never queue behind the
      // data-parallel gradient buckets (which overlap with backward).
      let comm: GradComm = new SingleMemberComm();
      if (mesh.dp.size > 1) {
        const t = await CommThread.start(pg, { prefix: 'athanor/grad' });
        threads.push(t);
        comm = t.newGroup([...mesh.dp.ranks], 'dp');
      }
      let tpComm: GradComm | null = null;
      if (mesh.tp.size > 1) {
        const t = await CommThread.start(pg, { prefix: 'athanor/tp' });
        threads.push(t);
        tpComm = t.newGroup([...mesh.tp.ranks], 'tp');
      }
      return new DistributedLayer(cfg, pg, mesh, comm, threads, tpComm);
    } catch (e) {
      for (const t of threads) await t.close().catch(() => undefined);
      await pg.destroy().catch(() => undefined);
      throw e;
    }
  }

  private get data(): DataParallel {
    if (!this.dp) throw new Error('distributed training: buildModel must run first');
    return this.dp;
  }

  buildModel(cfg: TrainConfig): GPT {
    let model: GPT;
    if (this.tpGroup) {
      const built = buildTensorParallelGpt(cfg.model, this.tpGroup, { seed: cfg.train.seed, recompute: cfg.train.recompute, sequenceParallel: cfg.parallel.sp });
      model = built.model;
      this.shards = built.shards;
      const byName = new Map(model.namedParameters());
      this.shardedParams = new Set([...built.shards.keys()].map((n) => byName.get(n)!));
    } else {
      model = new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute });
    }
    this.dp = applyDataParallel(model, this.comm, this.mesh.coords.dp, this.mesh.dims.dp, {
      zero: cfg.parallel.zero, bucketMB: cfg.parallel.bucketMB, deterministic: cfg.parallel.deterministic, transport: this.pg.backend, // DataParallel names its gradient thread's backend itself
    });
    return model;
  }

  schedule(model: GPT): StepSchedule {
    const dp = this.data;
    return accumulationSchedule(model, {
      onGradReady: dp.onGradReady,
      beforeForward: (last) => dp.beforeForward(last),
      afterEval: () => dp.afterEval(),
      meanLoss: (x) => this.meanScalar(x),
    });
  }

  reduceGrads(): Promise<void> {
    return this.data.reduceGrads();
  }

  async meanScalar(x: number): Promise<number> {
    if (this.mesh.dp.size === 1) return x;
    this.scalar[0] = x;
    await this.mesh.dp.allReduce(this.scalar, { op: 'avg', deterministic: this.cfg.parallel.deterministic }).wait();
    return this.scalar[0]!;
  }

  buildOptimizer(_model: GPT, cfg: TrainConfig): TrainOptimizer {
    const tp = this.mesh.tp;
    const tpRank = this.mesh.coords.tp;
    const buf = new Float32Array(1);
    return this.data.buildOptimizer({
      makeAdamW: (ps, relocate) => newAdamW(ps, cfg.optim, relocate),
      // Replicated parameters (norms, some biases) count once per tensor-parallel group.
      countInNorm: (p) => tpRank === 0 || this.shardedParams.has(p),
      sumOutsideDp: tp.size === 1 ? undefined : async (x) => {
        buf[0] = x;
        await tp.allReduce(buf, { op: 'sum', deterministic: true }).wait();
        return buf[0]!;
      },
    });
  }

  private get tpView(): TensorParallelCheckpoint {
    return new TensorParallelCheckpoint(this.shards, this.mesh.coords.tp);
  }

  async saveCheckpoint(root: string, _model: GPT, optim: TrainOptimizer, st: TrainState): Promise<string> {
    const segs = this.tpView.toGlobal(this.data.checkpointSegments(optim.adamw));
    return saveCheckpoint(root, { ...st, optimizer: optimizerMeta(optim.adamw) }, segs, { rank: this.rank, world: this.world, barrier: () => this.barrier() });
  }

  loadCheckpoint(dir: string, _model: GPT, optim: TrainOptimizer): TrainState {
    const r = new CheckpointReader(dir);
    try {
      const st = r.state as TrainState;
      this.data.loadCheckpoint(this.tpView.reader(r), optim.adamw, st.optimizer);
      return st;
    } finally {
      r.close();
    }
  }

  describe(): string {
    const { tp, dp, pp } = this.mesh.dims;
    const layout = `mesh tp ${tp} × dp ${dp} × pp ${pp} (order ${this.mesh.dims.order.join(', ')}, fastest first)` +
      (tp > 1 ? `, tensor parallel${this.cfg.parallel.sp ? ' + sequence parallel' : ''} over ${tp} ranks (thread: ${this.tpGroup?.backend ?? '?'})` : '');
    return `${layout}; ${this.data.describe()}`;
  }

  /** Elements this rank sent in tensor-parallel collectives so far (0 at tp = 1). */
  get tpSentElements(): number {
    return this.tpGroup?.sentElements ?? 0;
  }

  private async barrier(): Promise<void> {
    await this.pg.barrier().wait();
  }

  async close(): Promise<void> {
    for (const t of this.threads) await t.close();
    await this.pg.destroy();
  }
}

