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
import { GPT } from '../nn/gpt.js';
import { materialize } from '../nn/materialize.js';
import { Module } from '../nn/module.js';
import type { Tensor } from '../core/tensor.js';
import { initProcessGroup, type ProcessGroup } from '../runtime/init.js';
import { CommThread } from '../runtime/comm-thread.js';
import { buildMesh, type DeviceMesh } from './mesh.js';
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
  private readonly scalar = new Float32Array(1);

  private constructor(readonly cfg: TrainConfig, readonly pg: ProcessGroup, readonly mesh: DeviceMesh, private readonly thread: CommThread, readonly comm: GradComm, readonly epComm: ThreadEpComm) {
    this.rank = pg.rank;
    this.world = pg.size;
    this.dataRank = mesh.coords.dp;
    this.dataWorld = mesh.dims.dp;
  }

  static async create(cfg: TrainConfig): Promise<ExpertParallelLayer> {
    const pg = await initProcessGroup();
    let thread: CommThread | null = null;
    try {
      // Every invariant (MoE × tp / pp refused, ep | dp, ...) is checked before any thread starts.
      validateTrainConfig(cfg, pg.size);
      const { tp, pp, dp, ep } = cfg.parallel;
      if (tp !== 1 || pp !== 1) throw new Error(`rank ${pg.rank}: parallel.ep=${ep} runs with data parallelism only; set parallel.tp = parallel.pp = 1`);
      if (dp !== pg.size) throw new Error(`rank ${pg.rank}: parallel.dp is ${dp} but ${pg.size} ranks were started; pass --parallel.dp=${pg.size} (ep borrows its ranks from dp)`);
      if (cfg.parallel.zero === 3) throw new Error(`rank ${pg.rank}: parallel.ep does not combine with parallel.zero=3`);
      const mesh = buildMesh(pg, { tp, pp, dp, ep });
      // Gradient buckets and expert exchanges on separate threads: the exchanges are waited
      // for inside forward/backward and must not queue behind gradient reductions.
      thread = await CommThread.start(pg, { prefix: 'athanor/grad' });
      const comm = thread.newGroup([...mesh.dp.ranks], 'dp');
      const epComm = await ThreadEpComm.start(pg);
      return new ExpertParallelLayer(cfg, pg, mesh, thread, comm, epComm);
    } catch (e) {
      await thread?.close().catch(() => undefined);
      await pg.destroy().catch(() => undefined);
      throw e;
    }
  }

  private get data(): DataParallel {
    if (!this.dp) throw new Error('expert parallel training: buildModel must run first');
    return this.dp;
  }

  buildModel(cfg: TrainConfig): GPT {
    const model = new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute, deferInit: true });
    materialize(model, cfg.train.seed, expertShard(this.mesh.coords.ep, this.mesh.dims.ep));
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

  schedule(model: GPT): StepSchedule {
    const dp = this.data;
    return accumulationSchedule(model, {
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

  buildOptimizer(_model: GPT, cfg: TrainConfig): TrainOptimizer {
    const params = this.experts.map(([, p]) => p);
    const expertAdam = newAdamW(params, cfg.optim);
    const epComm = this.epComm, epRanks = [...this.mesh.ep.ranks];
    let expertSq = 0;
    const dense = this.data.buildOptimizer({
      makeAdamW: (ps, relocate) => newAdamW(ps, cfg.optim, relocate),
      // Expert shards are identical across edp and distinct across ep: add the ep sum.
      sumOutsideDp: async (x) => {
        const b = epComm.shared('norm', 1) as Float32Array;
        b[0] = expertSq;
        epComm.allReduce(epRanks, b, 'sum');
        return x + b[0]!;
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

  async saveCheckpoint(root: string, _model: GPT, optim: TrainOptimizer, st: TrainState): Promise<string> {
    const segs: Segment[] = this.data.checkpointSegments(optim.adamw);
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

  loadCheckpoint(dir: string, _model: GPT, optim: TrainOptimizer): TrainState {
    const r = new CheckpointReader(dir);
    try {
      const st = r.state as TrainState & { optimizer?: OptimizerMeta };
      this.data.loadCheckpoint(r, optim.adamw, st.optimizer);
      loadParams(r, this.experts, (_n, p) => [this.offsetOf(p), this.offsetOf(p) + p.size]);
      const expertAdam = (optim as TrainOptimizer & { expertAdam: AdamW }).expertAdam;
      const byName = new Map(this.experts.map(([n, p]) => [n, p]));
      if (st.optimizer) loadOptimizer(r, expertAdam, st.optimizer, (slot) => this.offsetOf(byName.get(slot)!));
      return st;
    } finally {
      r.close();
    }
  }

  describe(): string {
    const E = this.experts.reduce((s, [, p]) => s + p.size, 0);
    return `${this.data.describe()}; expert parallel: ep=${this.mesh.dims.ep} × edp=${this.mesh.dims.edp}, ${this.cfg.parallel.a2a} all-to-all, ${(E * 4 / 2 ** 20).toFixed(1)} MiB of expert weights on this rank`;
  }

  async close(): Promise<void> {
    await this.epComm.close();
    await this.thread.close();
    await this.pg.destroy();
  }
}
