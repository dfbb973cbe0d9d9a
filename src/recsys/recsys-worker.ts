// One dense trainer process of `athanor recsys` (started by the dist launcher): joins the
// process group, connects to the embedding servers named in its environment, streams its
// shard of the training file, trains, and (rank 0) evaluates and writes result.json.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { atomicWriteFileSync } from '../io/atomic-write.js';
import { initProcessGroup } from '../runtime/init.js';
import type { BackendRequest } from '../runtime/communicator.js';
import { EmbeddingClient, type EmbeddingEndpoint } from './embedding-client.js';
import { countLines, readCriteoBatches, type CriteoFormat, type RecBatch } from './criteo.js';
import { DLRM } from './dlrm.js';
import { HybridTrainer, type BatchSource } from './hybrid-trainer.js';
import { loadRecsysConfig, type RecsysConfig } from './recsys-config.js';
import { setBlasThreads } from '../backend/blas.js';
import { setKernelThreads } from '../backend/dispatch.js';

export const ENDPOINTS_ENV = 'ATHANOR_RECSYS_ENDPOINTS';
export const TOKEN_ENV = 'ATHANOR_EMBEDDING_TOKEN';
/** A JSON file of the servers' current endpoints (rewritten when a restarted server moves). */
export const ENDPOINTS_FILE_ENV = 'ATHANOR_RECSYS_ENDPOINTS_FILE';

/** One server failover as a trainer saw it. */
export interface TrainerFailover {
  shard: number;
  /** Milliseconds without that server. */
  downMs: number;
  /** Global step the trainer was at when the server came back. */
  atStep: number;
  /** Training step the restarted server's rows correspond to (its server step / trainers). */
  restoredStep: number;
  /** Steps whose row updates on that shard are lost (atStep - restoredStep). */
  lostSteps: number;
}

/** Steps per epoch when `world` trainers each take `batchSize` samples per step: every trainer gets equally many. */
export function stepsPerEpoch(lines: number, world: number, batchSize: number): number {
  return Math.floor(Math.floor(lines / world) / batchSize);
}

/** Trainer `rank`'s batches of a Criteo file, epoch after epoch, starting at any global step. */
export function criteoFileSource(path: string, o: { rank: number; world: number; batchSize: number; stepsPerEpoch: number; format: CriteoFormat }): BatchSource {
  return {
    open(step: number): AsyncIterator<RecBatch> {
      const spe = o.stepsPerEpoch;
      async function* gen(): AsyncGenerator<RecBatch> {
        for (let e = Math.floor(step / spe), first = true; ; e++, first = false) {
          const within = first ? step % spe : 0;
          yield* readCriteoBatches(path, { batchSize: o.batchSize, rank: o.rank, worldSize: o.world, skip: within * o.batchSize, limit: (spe - within) * o.batchSize, format: o.format });
        }
      }
      return gen();
    },
  };
}

export interface RecsysResult {
  auc: number; logLoss: number; evalSamples: number; steps: number; trainSamples: number;
  samplesPerSec: number; seconds: number; trainers: number; staleness: number; finalLoss: number;
  /** Rank 0's CPU seconds (user + system) over the training loop. */
  trainerCpuSeconds: number;
  /** All embedding servers' CPU seconds from just before training to after every trainer's last push. */
  serverCpuSeconds: number;
  /** Rank 0's wall seconds waiting for embedding rows, and in the dense all-reduce, over the training loop. */
  lookupWaitSeconds: number;
  allReduceSeconds: number;
  /** Embedding-server failovers survived in this attempt (rank 0's view). */
  failovers: TrainerFailover[];
}

export async function runRecsysWorker(configPath: string): Promise<number> {
  const c: RecsysConfig = loadRecsysConfig(configPath);
  const token = process.env[TOKEN_ENV];
  const eps = process.env[ENDPOINTS_ENV];
  if (!token || !eps) throw new Error(`recsys worker: env ${TOKEN_ENV} and ${ENDPOINTS_ENV} must be set (start it with 'athanor recsys <config>')`);
  const pg = await initProcessGroup({ backend: c.train.backend as BackendRequest });
  const rank = pg.rank, world = pg.size;
  if (world !== c.train.trainers) throw new Error(`recsys worker: world size ${world} but train.trainers = ${c.train.trainers}`);
  const log = (s: string): void => { if (rank === 0) process.stdout.write(`${s}\n`); };
  // The host's cores split between its trainers, as `athanor train` does. Left at the
  // libraries' default (every core per trainer) the GEMM and kernel thread pools of all
  // trainers and the servers oversubscribe the cores, and every fork/join of a step's small
  // GEMMs waits for a descheduled thread (measured: most of a trainer's compute time).
  const threads = Math.max(1, Math.floor((Number(process.env.ATHANOR_CORES ?? 0) || cpus().length) / Math.max(1, Number(process.env.ATHANOR_LOCAL_WORLD_SIZE ?? 1))));
  setBlasThreads(threads);
  setKernelThreads(threads);
  const epFile = process.env[ENDPOINTS_FILE_ENV];
  const failovers: TrainerFailover[] = [];
  let trainerRef: HybridTrainer | null = null;
  const client = await EmbeddingClient.connect({
    servers: JSON.parse(eps) as EmbeddingEndpoint[], token, wireDtype: c.servers.wireDtype, sharedMemoryBytes: c.train.sharedMemoryBytes,
    reconnect: {
      timeoutMs: 120_000,
      ...(epFile ? { resolve: (shard: number) => (JSON.parse(readFileSync(epFile, 'utf8')) as EmbeddingEndpoint[])[shard]! } : {}),
      onReconnect: (shard, info, downMs) => {
        const atStep = trainerRef?.step ?? 0;
        // Every trainer's last push of a step advances each server once: server step = world x training step.
        const restoredStep = Math.floor((info.loadedFrom?.step ?? 0) / world);
        const f: TrainerFailover = { shard, downMs, atStep, restoredStep, lostSteps: Math.max(0, atStep - restoredStep) };
        failovers.push(f);
        log(`embedding server ${shard} is back after ${downMs.toFixed(0)} ms, restored at step ${restoredStep} (${info.loadedFrom ? `dump ${info.loadedFrom.dumpId}` : 'empty: no checkpoint'}); ` +
          (f.lostSteps > 0 ? `its row updates of steps ${restoredStep}..${atStep - 1} are lost (${f.lostSteps} steps x ${world} trainers)` : 'no updates lost'));
      },
    },
  });
  try {
    const fmt: CriteoFormat = { numDense: c.data.numDense, numSparse: c.data.numSparse };
    const B = c.train.batchSize;
    const spe = stepsPerEpoch(countLines(c.data.train), world, B);
    if (spe < 1) throw new Error(`${c.data.train}: too few samples for ${world} trainers x batch ${B}`);
    let total = spe * c.train.epochs;
    if (c.train.maxSteps > 0) total = Math.min(total, c.train.maxSteps);
    const model = new DLRM({ numDense: fmt.numDense, numSparse: fmt.numSparse, embDim: c.model.embDim, bottom: c.model.bottom, top: c.model.top, pooling: c.model.pooling, seed: c.model.seed });
    let t0 = performance.now(), acc = 0, n = 0;
    const trainer = new HybridTrainer({
      model, client, comm: pg, staleness: c.train.staleness, stalenessCorrection: c.train.stalenessCorrection, dense: c.train.dense,
      ...(c.train.checkpointEvery > 0 ? { checkpoint: { dir: join(c.workDir, 'checkpoints'), every: c.train.checkpointEvery, keep: c.train.keepCheckpoints } } : {}),
      log,
      onStep: (s, loss) => {
        acc += loss; n++;
        if (s % c.train.logEvery === 0 || s === total) {
          const dt = (performance.now() - t0) / 1000;
          log(`step ${s}/${total}  loss ${(acc / n).toFixed(4)}  ${((n * B * world) / dt).toFixed(0)} samples/s`);
          acc = 0; n = 0; t0 = performance.now();
        }
      },
    });
    trainerRef = trainer;
    if (c.train.resume && c.train.checkpointEvery > 0) await trainer.resume();
    log(`recsys: ${world} trainers x batch ${B}, ${total} steps (${spe} per epoch), staleness k=${c.train.staleness}${c.train.staleness > 0 ? ` (correction ${c.train.stalenessCorrection ? 'on' : 'off'})` : ''}, ${client.numShards} embedding servers, ${model.numParameters()} dense parameters`);
    // The servers' CPU over the training loop (rank 0 asks; every trainer's requests count): CPU per step, whatever the load.
    const serverCpu = async (): Promise<number> => rank === 0 ? (await trainer.client.stats()).shards.reduce((a, s) => a + s.cpuUserMs + s.cpuSystemMs, 0) / 1000 : 0;
    await pg.barrier();
    const serverCpu0 = await serverCpu();
    const rep = await trainer.train(criteoFileSource(c.data.train, { rank, world, batchSize: B, stepsPerEpoch: spe, format: fmt }), total, B);
    // Ranks must not leave the group while another may still allreduce.
    await pg.barrier();
    const serverCpuSeconds = (await serverCpu()) - serverCpu0;
    if (rank === 0) {
      const limit = c.data.evalRows > 0 ? c.data.evalRows : undefined;
      const ev = await trainer.evaluate(readCriteoBatches(c.data.test, { batchSize: 1024, keepLast: true, format: fmt, ...(limit ? { limit } : {}) }));
      const last = [...rep.losses.entries()].sort((a, b) => a[0] - b[0]).at(-1)?.[1] ?? NaN;
      const result: RecsysResult = {
        auc: ev.auc, logLoss: ev.logLoss, evalSamples: ev.samples, steps: trainer.step, trainSamples: rep.samples,
        samplesPerSec: rep.samplesPerSec, seconds: rep.seconds, trainerCpuSeconds: rep.cpuSeconds, serverCpuSeconds, lookupWaitSeconds: rep.lookupWaitSeconds, allReduceSeconds: rep.allReduceSeconds, trainers: world, staleness: c.train.staleness, finalLoss: last, failovers,
      };
      atomicWriteFileSync(join(c.workDir, 'result.json'), JSON.stringify(result, null, 1));
    }
    await pg.barrier();
    return 0;
  } finally {
    client.close();
    await pg.destroy();
  }
}
