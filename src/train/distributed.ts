// The multi-process ParallelLayer for `athanor train`: the world communicator, a mesh
// over ParallelDims (tp fastest, then dp, then pp), the communication thread over the
// data-parallel group, and the GPT plan (src/parallel/plans/gpt.ts) applied to a plain
// model. The trainer sees only the ParallelLayer interface.
import { GPT } from '../nn/gpt.js';
import { initProcessGroup, type ProcessGroup } from '../runtime/init.js';
import { CommThread } from '../runtime/comm-thread.js';
import { buildMesh, parseMeshOrder, type DeviceMesh } from '../parallel/mesh.js';
import type { DataParallel } from '../parallel/data-parallel.js';
import { SingleMemberComm, type GradComm } from '../parallel/grad-comm.js';
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
import { asGpt, type ParallelLayer, type TrainModel } from './parallel-layer.js';
import { replicate } from '../parallel/data-parallel.js';
import { buildRankPipeline, type RankPipeline } from '../parallel/pipeline/pipeline-setup.js';
import { pipelineStepSchedule } from '../parallel/pipeline/pipeline-schedule.js';
import type { Communicator } from '../runtime/communicator.js';
import { pipelineSettings } from './memory-plan.js';
import { hsdpGroups, type HsdpGroups } from '../parallel/hsdp.js';
import { newOffloadAdamW } from './offload-setup.js';
import { gradCommFor } from '../parallel/grad-comm-bf16.js';
import type { MoeStepMetrics } from './moe-step.js';
import { pipelineMoeAfterStep, restorePipelineMoeBias, withPipelineMoeBias } from './moe-pipeline.js';

export class DistributedLayer implements ParallelLayer {
  readonly rank: number;
  readonly world: number;
  readonly dataRank: number;
  readonly dataWorld: number;
  private dp: DataParallel | null = null;
  /** This rank's pipeline stages and engine when parallel.pp > 1. */
  private pipe: RankPipeline | null = null;
  private readonly scalar = new Float32Array(1);
  /** Tensor-parallel placement of every split parameter (empty at tp = 1). */
  private shards = new Map<string, Shard>();
  private shardedParams = new Set<Tensor>();
  /** The tensor-parallel group's synchronous collectives (null at tp = 1). */
  readonly tpGroup: ThreadGroup | null;

  private constructor(readonly cfg: TrainConfig, readonly pg: ProcessGroup, readonly mesh: DeviceMesh,
    readonly comm: GradComm, private readonly threads: CommThread[], tpComm: GradComm | null, private readonly ppComm: Communicator | null,
    private readonly hsdp: HsdpGroups | null = null) {
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
      const mesh = buildMesh(pg, { tp, pp, dp, order: parseMeshOrder(cfg.parallel.order, 'parallel.order') });
      // One communication thread per parallel dimension in use, so the tensor-parallel
      // collectives (waited for inside forward/backward) never queue behind the
      // data-parallel gradient buckets (which overlap with backward).
      let comm: GradComm = new SingleMemberComm();
      let hsdp: HsdpGroups | null = null;
      if (mesh.dp.size > 1) {
        const t = await CommThread.start(pg, { prefix: 'athanor/grad' });
        threads.push(t);
        const sg = cfg.parallel.shardGroup;
        if (cfg.parallel.zero === 3 && sg > 0 && sg < dp) {
          hsdp = hsdpGroups(t, mesh.dp.ranks, mesh.coords.dp, sg);
          comm = hsdp.shard.comm;
        } else comm = t.newGroup([...mesh.dp.ranks], 'dp');
      }
      let tpComm: GradComm | null = null;
      if (mesh.tp.size > 1) {
        const t = await CommThread.start(pg, { prefix: 'athanor/tp' });
        threads.push(t);
        tpComm = t.newGroup([...mesh.tp.ranks], 'tp');
      }
      // The pipeline's point-to-point traffic gets its own thread too: tensor-parallel waits
      // block the main thread (Atomics.wait), and an activation sent from the main thread's
      // sockets would then sit unsent while the receiving stage waits for it inside its own
      // tensor-parallel collective, a cross-stage deadlock.
      let ppComm: Communicator | null = null;
      if (mesh.pp.size > 1) {
        const t = await CommThread.start(pg, { prefix: 'athanor/pp' });
        threads.push(t);
        ppComm = t.newGroup([...mesh.pp.ranks], 'pp');
      }
      return new DistributedLayer(cfg, pg, mesh, comm, threads, tpComm, ppComm, hsdp);
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

  buildModel(cfg: TrainConfig): TrainModel {
    if (cfg.parallel.pp > 1) {
      // Only this rank's stages exist (tensor-parallel shards of them with tp > 1); data
      // parallelism replicates them over the dp group.
      const tp = this.tpGroup ? { group: this.tpGroup, sequenceParallel: cfg.parallel.sp } : undefined;
      this.pipe = buildRankPipeline(cfg.model, pipelineSettings(cfg), this.ppComm ?? this.mesh.pp, this.pg, { seed: cfg.train.seed, recompute: cfg.train.recompute, tp });
      const stages = this.pipe.stages;
      this.shards = stages.shards;
      const byName = new Map(stages.namedParameters());
      this.shardedParams = new Set([...stages.shards.keys()].filter((n) => byName.has(n)).map((n) => byName.get(n)!));
      this.dp = replicate(stages, gradCommFor(this.comm, cfg.parallel.gradDtype), this.mesh.coords.dp, this.mesh.dims.dp, {
        zero: cfg.parallel.zero as 0 | 1 | 2, bucketMB: cfg.parallel.bucketMB, deterministic: cfg.parallel.deterministic, transport: this.pg.backend,
      });
      return stages;
    }
    let model: GPT;
    if (this.tpGroup) {
      const built = buildTensorParallelGpt(cfg.model, this.tpGroup, { seed: cfg.train.seed, recompute: cfg.train.recompute, sequenceParallel: cfg.parallel.sp });
      model = built.model;
      this.shards = built.shards;
      const byName = new Map(model.namedParameters());
      this.shardedParams = new Set([...built.shards.keys()].map((n) => byName.get(n)!));
    } else {
      // ZeRO-3 builds the model on the meta device: each rank then materializes only its shards.
      model = new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute, deferInit: cfg.parallel.zero === 3 || cfg.parallel.offload === 'disk' });
    }
    // HSDP: the data-parallel transform shards over the shard group and averages over the replica
    // group; with parallel.gradDtype=bf16 both carry their gradients in bf16 (grad-comm-bf16.ts).
    const h = this.hsdp;
    const gd = cfg.parallel.gradDtype;
    this.dp = applyDataParallel(model, gradCommFor(this.comm, gd), h ? h.shard.rank : this.mesh.coords.dp, h ? h.shard.size : this.mesh.dims.dp, {
      zero: cfg.parallel.zero, bucketMB: cfg.parallel.bucketMB, deterministic: cfg.parallel.deterministic, transport: this.pg.backend, // DataParallel names its gradient thread's backend itself
      seed: cfg.train.seed, replica: h ? { ...h.replica, comm: gradCommFor(h.replica.comm, gd) } : undefined,
    });
    return model;
  }

  schedule(model: TrainModel): StepSchedule {
    const dp = this.data;
    // Pipeline: each chunk's last backward starts the dp reductions of its parameters;
    // reduceGrads then takes the tied embedding, summed over its copies at the step's end.
    if (this.pipe) return pipelineStepSchedule(this.pipe.connect(dp.onGradReady), (x) => this.meanScalar(x));
    return accumulationSchedule(asGpt(model), {
      onGradReady: dp.onGradReady,
      beforeForward: (last) => dp.beforeForward(last),
      afterEval: () => dp.afterEval(),
      meanLoss: (x) => this.meanScalar(x),
    });
  }

  reduceGrads(): Promise<void> {
    return this.data.reduceGrads();
  }

  /** Pipeline stages hold some of the MoE layers: their statistics are gathered over the pipeline. */
  get moeAfterStep(): ((model: TrainModel) => Promise<MoeStepMetrics | null>) | undefined {
    const pipe = this.pipe;
    if (!pipe) return undefined;
    return () => pipelineMoeAfterStep(pipe.stages, this.cfg, this.mesh.dims.dp, (x) => this.meanScalar(x), this.mesh.pp, (v) => this.sumCounts(v));
  }

  async sumCounts(v: Int32Array): Promise<void> {
    if (this.mesh.dp.size === 1) return;
    await this.mesh.dp.allReduce(v, { op: 'sum', deterministic: this.cfg.parallel.deterministic }).wait();
  }

  async meanScalar(x: number): Promise<number> {
    if (this.mesh.dp.size === 1) return x;
    this.scalar[0] = x;
    await this.mesh.dp.allReduce(this.scalar, { op: 'avg', deterministic: this.cfg.parallel.deterministic }).wait();
    return this.scalar[0]!;
  }

  buildOptimizer(_model: TrainModel, cfg: TrainConfig): TrainOptimizer {
    const { tp, pp } = this.mesh;
    const tpRank = this.mesh.coords.tp;
    // The last pipeline stage's copy of a tied embedding is the first stage's parameter.
    const tied = this.pipe?.stages.tiedCopy ? this.pipe.stages.wte!.weight : null;
    return this.data.buildOptimizer({
      makeAdamW: (ps, relocate) => cfg.parallel.offload === 'disk'
        ? newOffloadAdamW(ps, cfg.optim, { dir: cfg.parallel.offloadDir, rank: this.rank }, relocate)
        : newAdamW(ps, cfg.optim, relocate),
      // Replicated parameters (norms, some biases) count once per tensor-parallel group.
      countInNorm: (p) => p !== tied && (tpRank === 0 || this.shardedParams.has(p)),
      sumOutsideDp: tp.size === 1 && pp.size === 1 ? undefined : async (x) => sumFloat64(pp, await sumFloat64(tp, x)),
    });
  }

  private get tpView(): TensorParallelCheckpoint {
    return new TensorParallelCheckpoint(this.shards, this.mesh.coords.tp);
  }

  async saveCheckpoint(root: string, _model: TrainModel, optim: TrainOptimizer, st: TrainState): Promise<string> {
    let segs = this.tpView.toGlobal(this.data.checkpointSegments(optim.adamw));
    // The first stage writes the tied embedding (and its moments); the last stage's copy is equal.
    if (this.pipe?.stages.tiedCopy) segs = segs.filter((s) => s.name !== 'wte.weight' && !/^optim\.[a-z_]+\.wte\.weight$/.test(s.name));
    if (this.pipe) st = await withPipelineMoeBias(this.pipe.stages, this.cfg, this.mesh.pp, st);
    return saveCheckpoint(root, { ...st, optimizer: optimizerMeta(optim.adamw) }, segs, { rank: this.rank, world: this.world, barrier: () => this.barrier() });
  }

  loadCheckpoint(dir: string, _model: TrainModel, optim: TrainOptimizer): TrainState {
    const r = new CheckpointReader(dir);
    try {
      const st = r.state as TrainState;
      this.data.loadCheckpoint(this.tpView.reader(r), optim.adamw, st.optimizer);
      if (this.pipe) restorePipelineMoeBias(this.pipe.stages, st, dir);
      return st;
    } finally {
      r.close();
    }
  }

  describe(): string {
    const { tp, dp, pp } = this.mesh.dims;
    const layout = `mesh tp ${tp} × dp ${dp} × pp ${pp} (order ${this.mesh.dims.order.join(', ')}, fastest first)` +
      (tp > 1 ? `, tensor parallel${this.cfg.parallel.sp ? ' + sequence parallel' : ''} over ${tp} ranks (thread: ${this.tpGroup?.backend ?? '?'})` : '');
    const pipe = this.pipe;
    if (!pipe) return `${layout}; ${this.data.describe()}`;
    const { shape, stages } = pipe;
    const chunks = stages.chunks.map((c) => `stage ${c.stage}: layers ${c.lo}-${c.hi - 1}${c.first ? ' + embedding' : ''}${c.last ? ' + head' : ''}`).join(', ');
    return `${layout}; pipeline: ${shape.p} stages × ${shape.v} chunk(s), ${shape.kind}, ${shape.m} micro-batches per step; ` +
      `pipeline rank ${this.mesh.coords.pp} holds ${chunks} (${stages.numParameters().toLocaleString('en-US')} parameters); ${this.data.describe()}`;
  }

  /** Elements this rank sent in tensor-parallel collectives so far (0 at tp = 1). */
  get tpSentElements(): number {
    return this.tpGroup?.sentElements ?? 0;
  }

  private async barrier(): Promise<void> {
    await this.pg.barrier().wait();
  }

  async close(): Promise<void> {
    this.tpGroup?.close();
    for (const t of this.threads) await t.close();
    await this.pg.destroy();
  }
}

/** Sum of a float64 over a group, exactly as one process would add it: raw bits gathered, added in group-rank order. */
async function sumFloat64(g: Communicator, x: number): Promise<number> {
  if (g.size === 1) return x;
  const mine = new Float64Array([x]), all = new Float64Array(g.size);
  await g.allGather(new Int32Array(mine.buffer), new Int32Array(all.buffer)).wait();
  let s = 0;
  for (const v of all) s += v;
  return s;
}
