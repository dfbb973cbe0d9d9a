// `athanor train` with parallel.ep > 1: data parallelism over dp ranks, of which every ep
// consecutive ones (an ep group) split each MoE layer's experts between them.
//   - the model is built on the meta device and each rank materializes only its experts
//     (values equal to the single-process model's, nn/materialize.ts);
//   - dense parameters go through `replicate` (ZeRO 0-2) over the whole dp group;
//   - expert parameters: tokens reach them through all-to-all-v on the tape
//     (expert-parallel.ts, on the EP communication thread), their gradients are reduced
//     over the expert-data-parallel group, and a second AdamW updates them with the same
//     global-norm clip (the norm adds every ep rank's expert shard);
//   - checkpoints store experts in global coordinates (each ep rank writes its rows), so
//     a run can resume under another ep count.
// With parallel.pp > 1 the same happens inside every pipeline stage: the rank builds only
// its stages (plans/gpt-pipeline.ts) with its experts of their MoE layers, its ep group is
// drawn from the data-parallel ranks of its stage, the pipeline engine runs the schedule
// (the all-to-alls inside each stage's forward and backward, matched because every rank of
// a stage runs the same action list), and the gradient norm adds the stages' sums.
import { GPT } from '../nn/gpt.js';
import { materialize } from '../nn/materialize.js';
import { Module } from '../nn/module.js';
import type { Tensor } from '../core/tensor.js';
import { initProcessGroup, type ProcessGroup } from '../runtime/init.js';
import { CommThread } from '../runtime/comm-thread.js';
import { buildMesh, parseMeshOrder, type DeviceMesh } from './mesh.js';
import type { Communicator } from '../runtime/communicator.js';
import { buildRankPipeline, type RankPipeline } from './pipeline/pipeline-setup.js';
import { pipelineStepSchedule } from './pipeline/pipeline-schedule.js';
import { pipelineSettings } from '../train/memory-plan.js';
import { pipelineMoeAfterStep, restorePipelineMoeBias, sumFloat64Vector, withPipelineMoeBias } from '../train/moe-pipeline.js';
import type { MoeStepMetrics } from '../train/moe-step.js';
import { asGpt, type TrainModel } from '../train/parallel-layer.js';
import { replicate, type DataParallel, type GradComm } from './data-parallel.js';
import { CheckpointReader, type Segment } from '../io/checkpoint.js';
import { gradSumSquares, clipCoefficient, type AdamW } from '../optim/index.js';
import { optimizerMeta, optimizerSegments, loadParams, loadOptimizer, type OptimizerMeta } from '../optim/state-segments.js';
import { validateTrainConfig, type TrainConfig } from '../train/config.js';
import { saveCheckpoint, type TrainState } from '../train/train-checkpoint.js';
import { newAdamW, type TrainOptimizer } from '../train/optim-setup.js';
import { accumulationSchedule, type StepSchedule } from '../train/step-schedule.js';
import type { ParallelLayer } from '../train/parallel-layer.js';
import { ThreadEpComm } from './expert-parallel-comm.js';
import { ExpertParallel, expertShard, isExpertParam } from './expert-parallel.js';

/** The dense parameters of a model as a module of their own (what `replicate` sees). */
class DenseView extends Module {
  constructor(private readonly inner: Module) { super(); }
  override namedParameters(prefix = ''): [string, Tensor][] {
    return this.inner.namedParameters(prefix).filter(([n]) => !isExpertParam(n));
  }
}

export class ExpertParallelLayer implements ParallelLayer {
  readonly rank: number;
  readonly world: number;
  readonly dataRank: number;
  readonly dataWorld: number;
  private dp: DataParallel | null = null;
  private ep: ExpertParallel | null = null;
  private experts: [string, Tensor][] = [];
  /** This rank's pipeline stages and engine when parallel.pp > 1. */
  private pipe: RankPipeline | null = null;
  private readonly scalar = new Float32Array(1);

  private constructor(readonly cfg: TrainConfig, readonly pg: ProcessGroup, readonly mesh: DeviceMesh, private readonly thread: CommThread, readonly comm: GradComm, readonly epComm: ThreadEpComm,
    private readonly ppThread: CommThread | null, private readonly ppComm: Communicator | null) {
    this.rank = pg.rank;
    this.world = pg.size;
    this.dataRank = mesh.coords.dp;
    this.dataWorld = mesh.dims.dp;
  }

  static async create(cfg: TrainConfig): Promise<ExpertParallelLayer> {
    const pg = await initProcessGroup();
    let thread: CommThread | null = null, ppThread: CommThread | null = null;
    try {
      // Every invariant (MoE × tp / pp refused, ep | dp, ...) is checked before any thread starts.
      validateTrainConfig(cfg, pg.size);
      const { tp, pp, dp, ep } = cfg.parallel;
      if (tp !== 1) throw new Error(`rank ${pg.rank}: parallel.ep=${ep} runs with data (and pipeline) parallelism; set parallel.tp = 1`);
      if (dp * pp !== pg.size) throw new Error(`rank ${pg.rank}: parallel.dp × parallel.pp is ${dp} × ${pp} but ${pg.size} ranks were started (ep borrows its ranks from dp)`);
      if (cfg.parallel.zero === 3) throw new Error(`rank ${pg.rank}: parallel.ep does not combine with parallel.zero=3`);
      const mesh = buildMesh(pg, { tp, pp, dp, ep, order: parseMeshOrder(cfg.parallel.order, 'parallel.order') });
      // Gradient buckets and expert exchanges on separate threads: the exchanges are waited
      // for inside forward/backward and must not queue behind gradient reductions.
      thread = await CommThread.start(pg, { prefix: 'athanor/grad' });
      const comm = thread.newGroup([...mesh.dp.ranks], 'dp');
      const epComm = await ThreadEpComm.start(pg);
      // Pipeline traffic on its own thread: the expert exchanges block the main thread (as
      // tensor-parallel waits do in distributed.ts), and an activation queued on the main
      // thread would then sit unsent while the next stage waits for it.
      let ppComm: Communicator | null = null;
      if (pp > 1) {
        ppThread = await CommThread.start(pg, { prefix: 'athanor/pp' });
        ppComm = ppThread.newGroup([...mesh.pp.ranks], 'pp');
      }
      return new ExpertParallelLayer(cfg, pg, mesh, thread, comm, epComm, ppThread, ppComm);
    } catch (e) {
      await ppThread?.close().catch(() => undefined);
      await thread?.close().catch(() => undefined);
      await pg.destroy().catch(() => undefined);
      throw e;
    }
  }

  private get data(): DataParallel {
    if (!this.dp) throw new Error('expert parallel training: buildModel must run first');
    return this.dp;
  }

  buildModel(cfg: TrainConfig): TrainModel {
    const shard = expertShard(this.mesh.coords.ep, this.mesh.dims.ep);
    let model: GPT | RankPipeline['stages'];
    if (this.ppComm) {
      this.pipe = buildRankPipeline(cfg.model, pipelineSettings(cfg), this.ppComm, this.pg, { seed: cfg.train.seed, recompute: cfg.train.recompute, shard });
      model = this.pipe.stages;
    } else {
      model = new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute, deferInit: true });
      materialize(model, cfg.train.seed, shard);
    }
    this.ep = new ExpertParallel(model, {
      comm: this.epComm, epRanks: [...this.mesh.ep.ranks], edpRanks: [...this.mesh.edp.ranks], a2a: cfg.parallel.a2a,
    });
    this.experts = this.ep.split().experts;
    for (const [n, p] of this.experts) p.name = n;
    this.dp = replicate(new DenseView(model), this.comm, this.mesh.coords.dp, this.mesh.dims.dp, {
      zero: cfg.parallel.zero as 0 | 1 | 2, bucketMB: cfg.parallel.bucketMB, deterministic: cfg.parallel.deterministic, transport: this.pg.backend,
    });
    return model;
  }

  schedule(model: TrainModel): StepSchedule {
    const dp = this.data;
    if (this.pipe) return pipelineStepSchedule(this.pipe.connect(dp.onGradReady), (x) => this.meanScalar(x));
    return accumulationSchedule(asGpt(model), {
      onGradReady: dp.onGradReady,
      beforeForward: (last) => dp.beforeForward(last),
      afterEval: () => dp.afterEval(),
      meanLoss: (x) => this.meanScalar(x),
    });
  }

  async reduceGrads(): Promise<void> {
    this.ep!.reduceExpertGrads(this.mesh.dims.dp);
    await this.data.reduceGrads();
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

  /** Pipeline stages hold some of the MoE layers: their statistics are gathered over the pipeline. */
  get moeAfterStep(): ((model: TrainModel) => Promise<MoeStepMetrics | null>) | undefined {
    const pipe = this.pipe;
    if (!pipe) return undefined;
    return () => pipelineMoeAfterStep(pipe.stages, this.cfg, this.mesh.dims.dp, (x) => this.meanScalar(x), this.mesh.pp, (v) => this.sumCounts(v));
  }

  buildOptimizer(_model: TrainModel, cfg: TrainConfig): TrainOptimizer {
    const params = this.experts.map(([, p]) => p);
    const expertAdam = newAdamW(params, cfg.optim);
    const epComm = this.epComm, epRanks = [...this.mesh.ep.ranks];
    let expertSq = 0;
    // The last pipeline stage's copy of a tied embedding is the first stage's parameter.
    const tied = this.pipe?.stages.tiedCopy ? this.pipe.stages.wte!.weight : null;
    const pp = this.mesh.pp;
    const dense = this.data.buildOptimizer({
      makeAdamW: (ps, relocate) => newAdamW(ps, cfg.optim, relocate),
      ...(tied ? { countInNorm: (p: Tensor) => p !== tied } : {}),
      // Expert shards are identical across edp and distinct across ep: add the ep sum (and
      // with pipeline stages, every stage's sum).
      sumOutsideDp: async (x) => {
        const b = epComm.shared('norm', 1) as Float32Array;
        b[0] = expertSq;
        epComm.allReduce(epRanks, b, 'sum');
        const stage = x + b[0]!;
        return pp.size > 1 ? (await sumFloat64Vector(pp, new Float64Array([stage])))[0]! : stage;
      },
    });
    return {
      adamw: dense.adamw,
      step: async (lr, maxNorm) => {
        expertSq = gradSumSquares(params);
        const r = await dense.step(lr, maxNorm);
        if (r.applied) {
          for (const g of expertAdam.paramGroups) g.lr = lr;
          expertAdam.step({ gradScale: maxNorm > 0 ? clipCoefficient(r.gradNorm, maxNorm) : 1 });
        }
        expertAdam.zeroGrad();
        return r;
      },
      zeroGrad: () => { dense.zeroGrad(); expertAdam.zeroGrad(); },
      expertAdam,
    } as TrainOptimizer & { expertAdam: AdamW };
  }

  /** Where this rank's expert rows start in the full (E, …) tensor. */
  private offsetOf(p: Tensor): number {
    return this.mesh.coords.ep * p.size;
  }

  async saveCheckpoint(root: string, _model: TrainModel, optim: TrainOptimizer, st: TrainState): Promise<string> {
    let segs: Segment[] = this.data.checkpointSegments(optim.adamw);
    // The first stage writes the tied embedding (and its moments); the last stage's copy is equal.
    if (this.pipe?.stages.tiedCopy) segs = segs.filter((s) => s.name !== 'wte.weight' && !/^optim\.[a-z_]+\.wte\.weight$/.test(s.name));
    if (this.pipe) st = await withPipelineMoeBias(this.pipe.stages, this.cfg, this.mesh.pp, st);
    const expertAdam = (optim as TrainOptimizer & { expertAdam: AdamW }).expertAdam;
    if (this.mesh.coords.edp === 0) {
      const E = this.mesh.dims.ep;
      const global = (p: Tensor) => [p.shape[0]! * E, ...p.shape.slice(1)];
      for (const [name, p] of this.experts) {
        const o = this.offsetOf(p);
        segs.push({ name, shape: global(p), dtype: 'float32', start: o, end: o + p.size, data: p.data.subarray(p.offset, p.offset + p.size) });
      }
      const byName = new Map(this.experts.map(([n, p]) => [n, p]));
      for (const s of optimizerSegments(expertAdam)) {
        const p = byName.get(s.name.replace(/^optim\.[a-z_]+\./, ''))!;
        const o = this.offsetOf(p);
        segs.push({ ...s, shape: global(p), start: s.start + o, end: s.end + o });
      }
    }
    const meta = optimizerMeta(optim.adamw);
    return saveCheckpoint(root, { ...st, optimizer: meta }, segs, { rank: this.rank, world: this.world, barrier: async () => { await this.pg.barrier().wait(); } });
  }

  loadCheckpoint(dir: string, _model: TrainModel, optim: TrainOptimizer): TrainState {
    const r = new CheckpointReader(dir);
    try {
      const st = r.state as TrainState & { optimizer?: OptimizerMeta };
      this.data.loadCheckpoint(r, optim.adamw, st.optimizer);
      loadParams(r, this.experts, (_n, p) => [this.offsetOf(p), this.offsetOf(p) + p.size]);
      const expertAdam = (optim as TrainOptimizer & { expertAdam: AdamW }).expertAdam;
      const byName = new Map(this.experts.map(([n, p]) => [n, p]));
      if (st.optimizer) loadOptimizer(r, expertAdam, st.optimizer, (slot) => this.offsetOf(byName.get(slot)!));
      if (this.pipe) restorePipelineMoeBias(this.pipe.stages, st, dir);
      return st;
    } finally {
      r.close();
    }
  }

  describe(): string {
    const E = this.experts.reduce((s, [, p]) => s + p.size, 0);
    const pipe = this.pipe;
    const stages = pipe ? `; pipeline: ${pipe.shape.p} stages × ${pipe.shape.v} chunk(s), ${pipe.shape.kind}, ${pipe.shape.m} micro-batches per step; pipeline rank ${this.mesh.coords.pp} holds ` +
      pipe.stages.chunks.map((c) => `stage ${c.stage}: layers ${c.lo}-${c.hi - 1}`).join(', ') : '';
    return `${this.data.describe()}; expert parallel: ep=${this.mesh.dims.ep} × edp=${this.mesh.dims.edp}, ${this.cfg.parallel.a2a} all-to-all, ${(E * 4 / 2 ** 20).toFixed(1)} MiB of expert weights on this rank${stages}`;
  }

  async close(): Promise<void> {
    await this.epComm.close();
    await this.ppThread?.close();
    await this.thread.close();
    await this.pg.destroy();
  }
}
