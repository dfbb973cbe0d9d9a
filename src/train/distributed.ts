// The multi-process ParallelLayer for `athanor train`: the world communicator, a mesh
// over ParallelDims (tp fastest, then dp, then pp), the communication thread over the
// data-parallel group, and the GPT plan (src/parallel/plans/gpt.ts) applied to a plain
// model. The trainer sees only the ParallelLayer interface.
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { GPT } from '../nn/gpt.js';
import { initProcessGroup, type InitOptions, type ProcessGroup } from '../runtime/init.js';
import { TcpStoreServer } from '../runtime/tcp-store.js';
import { CommThread } from '../runtime/comm-thread.js';
import { buildMesh, type DeviceMesh } from '../parallel/mesh.js';
import type { DataParallel } from '../parallel/data-parallel.js';
import { applyDataParallel } from '../parallel/plans/gpt.js';
import { CheckpointReader } from '../io/checkpoint.js';
import { optimizerMeta } from '../optim/state-segments.js';
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

  private constructor(readonly cfg: TrainConfig, readonly pg: ProcessGroup, readonly mesh: DeviceMesh, readonly comm: CommThread) {
    this.rank = pg.rank;
    this.world = pg.size;
    this.dataRank = mesh.coords.dp;
    this.dataWorld = mesh.dims.dp;
  }

  static async create(cfg: TrainConfig): Promise<DistributedLayer> {
    const pg = await initProcessGroup();
    try {
      const { tp, pp, dp } = cfg.parallel;
      if (tp !== 1 || pp !== 1) {
        throw new Error(`rank ${pg.rank}: parallel.tp=${tp}, parallel.pp=${pp}: athanor train runs data parallelism (with ZeRO); set parallel.dp to the world size (${pg.size}) and tp = pp = 1`);
      }
      if (dp * tp * pp !== pg.size) throw new Error(`rank ${pg.rank}: parallel.dp is ${dp} but ${pg.size} ranks were started; pass --parallel.dp=${pg.size}`);
      const mesh = buildMesh(pg, { tp, pp, dp });
      const comm = await CommThread.start(await commThreadInit(pg), [...mesh.dp.ranks]);
      return new DistributedLayer(cfg, pg, mesh, comm);
    } catch (e) {
      await pg.destroy().catch(() => undefined);
      throw e;
    }
  }

  private get data(): DataParallel {
    if (!this.dp) throw new Error('distributed training: buildModel must run first');
    return this.dp;
  }

  buildModel(cfg: TrainConfig): GPT {
    const model = new GPT(cfg.model, { seed: cfg.train.seed, recompute: cfg.train.recompute });
    this.dp = applyDataParallel(model, this.comm, this.mesh.coords.dp, this.mesh.dims.dp, {
      zero: cfg.parallel.zero, bucketMB: cfg.parallel.bucketMB, deterministic: cfg.parallel.deterministic, transport: this.pg.backend,
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
    return this.data.buildOptimizer({ makeAdamW: (ps, relocate) => newAdamW(ps, cfg.optim, relocate) });
  }

  async saveCheckpoint(root: string, _model: GPT, optim: TrainOptimizer, st: TrainState): Promise<string> {
    const segs = this.data.checkpointSegments(optim.adamw);
    return saveCheckpoint(root, { ...st, optimizer: optimizerMeta(optim.adamw) }, segs, { rank: this.rank, world: this.world, barrier: () => this.barrier() });
  }

  loadCheckpoint(dir: string, _model: GPT, optim: TrainOptimizer): TrainState {
    const r = new CheckpointReader(dir);
    try {
      const st = r.state as TrainState;
      this.data.loadCheckpoint(r, optim.adamw, st.optimizer);
      return st;
    } finally {
      r.close();
    }
  }

  describe(): string {
    return this.data.describe();
  }

  private async barrier(): Promise<void> {
    await this.pg.barrier().wait();
  }

  async close(): Promise<void> {
    await this.comm.close();
    await this.pg.destroy();
    await storeServer?.close();
    storeServer = null;
  }
}

/**
 * How the communication thread joins its own group. Under the launcher it rendezvous
 * through the launcher's store; under mpirun (where MPI must stay on the main thread)
 * rank 0 hosts a store and announces it over MPI, and the thread uses sockets.
 */
export async function commThreadInit(pg: ProcessGroup): Promise<InitOptions> {
  const base: InitOptions = { prefix: 'athanor/grad', hostStore: false };
  if (pg.backend !== 'mpi') return { ...base, backend: pg.backend === 'local' ? 'auto' : pg.backend };
  const msg = new Uint8Array(512);
  if (pg.rank === 0) {
    const token = randomBytes(24).toString('hex');
    const local = process.env.OMPI_COMM_WORLD_LOCAL_SIZE === process.env.OMPI_COMM_WORLD_SIZE;
    storeServer = await TcpStoreServer.start({ host: local ? '127.0.0.1' : '0.0.0.0', port: 0, token });
    const addr = local ? '127.0.0.1' : Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address ?? '127.0.0.1';
    msg.set(Buffer.from(JSON.stringify({ a: addr, p: storeServer.port, t: token, l: local })));
  }
  await pg.broadcast(new Uint16Array(msg.buffer), 0).wait();
  const info = JSON.parse(Buffer.from(msg).toString('utf8').replace(/\0+$/, '')) as { a: string; p: number; t: string; l: boolean };
  return { ...base, backend: info.l ? 'unix' : 'tcp', rank: pg.rank, worldSize: pg.size, masterAddr: info.a, masterPort: info.p, token: info.t };
}

let storeServer: TcpStoreServer | null = null;

/** Closes the store commThreadInit may have started (under mpirun); for layers other than DistributedLayer. */
export async function closeCommThreadStore(): Promise<void> {
  await storeServer?.close();
  storeServer = null;
}
