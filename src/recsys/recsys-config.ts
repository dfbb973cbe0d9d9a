// The one JSON file of `athanor recsys <config.json>`: data, embedding servers, model, training.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { EmbeddingServerConfigInput, InitConfig } from './embedding-config.js';
import type { SparseOptimizerConfig } from './sparse-optimizer.js';
import type { WireDType } from './protocol.js';
import type { DenseOptimizerConfig } from './hybrid-trainer.js';
import { DEFAULT_SHARED_MEMORY_BYTES } from './embedding-client.js';

export interface RecsysConfig {
  workDir: string;
  data: {
    train: string; test: string; numDense: number; numSparse: number;
    generate: null | { trainRows: number; testRows: number; vocab: number; zipfS: number; seed: number; pairFields: number };
    evalRows: number;
  };
  servers: {
    numShards: number; host: string; wireDtype: WireDType; capacity: number; idBits: number; seed: number;
    optimizer: SparseOptimizerConfig | { kind: string; [k: string]: unknown }; init: InitConfig; admitProbability: number; expireSteps: number;
    maxRestarts: number;
  };
  model: { embDim: number; bottom: number[]; top: number[]; pooling: 'sum' | 'mean'; seed: number };
  train: {
    trainers: number; batchSize: number; epochs: number; maxSteps: number; staleness: number; stalenessCorrection: boolean; dense: DenseOptimizerConfig;
    checkpointEvery: number; keepCheckpoints: number; resume: boolean; maxRestarts: number; logEvery: number; backend: string;
    sharedMemoryBytes: number;
  };
}

export const RECSYS_HELP = `athanor recsys <config.json> — PERSIA-style hybrid recommender training

Starts the embedding servers (one process per shard), the dense trainers (one process
per trainer, through the dist launcher; dense gradients are allreduced every step,
embeddings are looked up and updated asynchronously with bounded staleness), and each
trainer's streaming Criteo reader over its own shard of the data. Trains DLRM, then
evaluates on the test file and prints AUC, log-loss and samples/s. Checkpoints (dense
state + data position + an embedding-server dump of the same step) go to
<workDir>/checkpoints; a rerun (or a restart after a failure) resumes from the newest.

Config fields (defaults in brackets; paths are relative to the config file):
  workDir                    run directory: generated data, checkpoints, result.json [<config name>.run]
  data.train / data.test     Criteo TSV files (label, numDense integers, numSparse hex categoricals)
                             [<workDir>/train.tsv, <workDir>/test.tsv]
  data.numDense              integer features per line [13]
  data.numSparse             categorical features per line; field f is embedding feature group f [26]
  data.generate              if set and the files are missing, synthetic data is written first:
    .trainRows / .testRows     samples [200000 / 20000]
    .vocab                     distinct values per categorical field (Zipf-distributed) [1000]
    .zipfS                     Zipf exponent [1.05]
    .seed                      seed of the hidden ground-truth model [1]
    .pairFields                fields with hidden pairwise interactions [0]
  data.evalRows              evaluate on at most this many test samples (0 = all) [0]
  servers.numShards          embedding server processes [2]
  servers.host               address they listen on [127.0.0.1]
  servers.wireDtype          'bfloat16' or 'float32' rows and gradients on the wire [bfloat16]
  servers.capacity           most rows one server keeps per feature group (LRU beyond) [1048576]
  servers.idBits             id-space bits per group, for the addressable-parameter report [56]
  servers.seed               seed of row init and admission [0]
  servers.optimizer          sparse optimizer: {kind:'adagrad'|'adam'|'sgd', lr, ...} [{kind:'adagrad', lr:0.05}]
  servers.init               {kind:'uniform', scale} or {kind:'zeros'} [{kind:'uniform', scale:0.05}]
  servers.admitProbability   probability an unseen id is stored [1]
  servers.expireSteps        drop rows untouched for this many server steps (0 = never) [0]
  servers.maxRestarts        in-job failover: a server that dies is restarted from the newest checkpoint
                             while the trainers reconnect and go on (its updates since then are lost and
                             logged); at most this many times per job [3]
  model.embDim               D: embedding width = bottom MLP output [16]
  model.bottom               bottom MLP hidden widths [[64, 32]]
  model.top                  top MLP hidden widths [[64, 32]]
  model.pooling              'sum' or 'mean' for multi-hot bags ['sum']
  model.seed                 dense init seed [1]
  train.trainers             dense trainer processes (data parallel) [2]
  train.batchSize            samples per trainer per step [256]
  train.epochs               passes over the training file [1]
  train.maxSteps             stop after this many global steps (0 = no limit) [0]
  train.staleness            k: embedding lookups may run k batches ahead of applied gradients (0 = synchronous) [4]
  train.stalenessCorrection  with k > 0, each trainer replays its own in-flight gradients on the stale
                             rows it looked up (lookups also carry the rows' optimizer state);
                             needs servers.optimizer.kind 'sgd' or 'adagrad'
                             [true for sgd/adagrad, false otherwise]
  train.dense                dense optimizer {kind:'adamw'|'sgd'|'adagrad', lr, weightDecay} [{kind:'adamw', lr:0.001}]
  train.checkpointEvery      steps between checkpoints (0 = none) [0]
  train.keepCheckpoints      checkpoints kept [2]
  train.resume               resume from the newest checkpoint in <workDir>/checkpoints [true]
  train.maxRestarts          times the job is restarted from its checkpoint after a process fails [1]
  train.logEvery             steps between progress lines (rank 0) [100]
  train.backend              collective backend for the dense allreduce ('auto', 'tcp', 'unix') [auto]
  train.sharedMemoryBytes    region each trainer shares with each embedding server on its host: ids,
                             gradients and rows skip the socket (0 = everything over the socket, e.g.
                             where /dev/shm is small, as in a container's 64 MiB default) [8388608]

Example: athanor recsys examples/recsys-small.json`;

function obj(x: unknown, where: string): Record<string, unknown> {
  if (x === undefined) return {};
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw new Error(`${where} must be an object`);
  return x as Record<string, unknown>;
}

function int(o: Record<string, unknown>, k: string, def: number, where: string, lo = 0): number {
  const v = o[k] ?? def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo) throw new Error(`${where}: field '${k}' must be an integer >= ${lo} (got ${JSON.stringify(o[k])})`);
  return v;
}

function num(o: Record<string, unknown>, k: string, def: number, where: string): number {
  const v = o[k] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}: field '${k}' must be a number (got ${JSON.stringify(o[k])})`);
  return v;
}

function ints(o: Record<string, unknown>, k: string, def: number[], where: string): number[] {
  const v = o[k] ?? def;
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x) && x > 0)) throw new Error(`${where}: field '${k}' must be an array of positive integers`);
  return v as number[];
}

export function loadRecsysConfig(path: string): RecsysConfig {
  let raw: unknown;
  try { raw = JSON.parse(readFileSync(path, 'utf8')); } catch (e) { throw new Error(`${path}: ${(e as Error).message}`); }
  return parseRecsysConfig(raw, path);
}

export function parseRecsysConfig(raw: unknown, path: string): RecsysConfig {
  const base = dirname(resolve(path));
  const rel = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  const top = obj(raw, path);
  for (const k of Object.keys(top)) if (!['workDir', 'data', 'servers', 'model', 'train'].includes(k)) throw new Error(`${path}: unknown field '${k}'`);
  const workDir = rel(typeof top.workDir === 'string' ? top.workDir : `${resolve(path).replace(/\.json$/, '')}.run`);
  const d = obj(top.data, `${path}: data`), w = `${path}: data`;
  const g = d.generate === undefined || d.generate === null ? null : obj(d.generate, `${w}.generate`);
  const s = obj(top.servers, `${path}: servers`), sw = `${path}: servers`;
  const m = obj(top.model, `${path}: model`), mw = `${path}: model`;
  const t = obj(top.train, `${path}: train`), tw = `${path}: train`;
  const wire = s.wireDtype ?? 'bfloat16';
  if (wire !== 'bfloat16' && wire !== 'float32') throw new Error(`${sw}: field 'wireDtype' must be 'bfloat16' or 'float32'`);
  const pooling = m.pooling ?? 'sum';
  if (pooling !== 'sum' && pooling !== 'mean') throw new Error(`${mw}: field 'pooling' must be 'sum' or 'mean'`);
  const dense = obj(t.dense ?? { kind: 'adamw', lr: 0.001 }, `${tw}.dense`);
  if (!['adamw', 'sgd', 'adagrad'].includes(dense.kind as string)) throw new Error(`${tw}.dense: field 'kind' must be 'adamw', 'sgd' or 'adagrad'`);
  const optKind = (s.optimizer as { kind?: unknown } | undefined)?.kind ?? 'adagrad';
  const replayable = optKind === 'sgd' || optKind === 'adagrad';
  if (t.stalenessCorrection !== undefined && typeof t.stalenessCorrection !== 'boolean') throw new Error(`${tw}: field 'stalenessCorrection' must be true or false`);
  if (t.stalenessCorrection === true && !replayable) throw new Error(`${tw}: field 'stalenessCorrection' needs servers.optimizer.kind 'sgd' or 'adagrad' (got ${JSON.stringify(optKind)})`);
  return {
    workDir,
    data: {
      train: rel(typeof d.train === 'string' ? d.train : `${workDir}/train.tsv`),
      test: rel(typeof d.test === 'string' ? d.test : `${workDir}/test.tsv`),
      numDense: int(d, 'numDense', 13, w), numSparse: int(d, 'numSparse', 26, w, 1),
      generate: g && {
        trainRows: int(g, 'trainRows', 200_000, `${w}.generate`, 1), testRows: int(g, 'testRows', 20_000, `${w}.generate`, 1),
        vocab: int(g, 'vocab', 1000, `${w}.generate`, 1), zipfS: num(g, 'zipfS', 1.05, `${w}.generate`),
        seed: int(g, 'seed', 1, `${w}.generate`), pairFields: int(g, 'pairFields', 0, `${w}.generate`),
      },
      evalRows: int(d, 'evalRows', 0, w),
    },
    servers: {
      numShards: int(s, 'numShards', 2, sw, 1), host: typeof s.host === 'string' ? s.host : '127.0.0.1', wireDtype: wire,
      capacity: int(s, 'capacity', 1 << 20, sw, 1), idBits: int(s, 'idBits', 56, sw, 1), seed: int(s, 'seed', 0, sw),
      optimizer: (s.optimizer as SparseOptimizerConfig | undefined) ?? { kind: 'adagrad', lr: 0.05 },
      init: (s.init as InitConfig | undefined) ?? { kind: 'uniform', scale: 0.05 },
      admitProbability: num(s, 'admitProbability', 1, sw), expireSteps: int(s, 'expireSteps', 0, sw),
      maxRestarts: int(s, 'maxRestarts', 3, sw),
    },
    model: {
      embDim: int(m, 'embDim', 16, mw, 1), bottom: ints(m, 'bottom', [64, 32], mw), top: ints(m, 'top', [64, 32], mw),
      pooling, seed: int(m, 'seed', 1, mw),
    },
    train: {
      trainers: int(t, 'trainers', 2, tw, 1), batchSize: int(t, 'batchSize', 256, tw, 1), epochs: int(t, 'epochs', 1, tw, 1),
      maxSteps: int(t, 'maxSteps', 0, tw), staleness: int(t, 'staleness', 4, tw),
      stalenessCorrection: t.stalenessCorrection === undefined ? replayable : t.stalenessCorrection === true,
      dense: { kind: dense.kind as DenseOptimizerConfig['kind'], lr: num(dense, 'lr', 0.001, `${tw}.dense`), weightDecay: num(dense, 'weightDecay', 0, `${tw}.dense`) },
      checkpointEvery: int(t, 'checkpointEvery', 0, tw), keepCheckpoints: int(t, 'keepCheckpoints', 2, tw, 1),
      resume: t.resume === undefined ? true : t.resume === true, maxRestarts: int(t, 'maxRestarts', 1, tw),
      logEvery: int(t, 'logEvery', 100, tw, 1), backend: typeof t.backend === 'string' ? t.backend : 'auto',
      sharedMemoryBytes: int(t, 'sharedMemoryBytes', DEFAULT_SHARED_MEMORY_BYTES, tw),
    },
  };
}

/** The embedding-server config (one group per sparse field, group id = field index). */
export function serverConfigOf(c: RecsysConfig): EmbeddingServerConfigInput {
  const s = c.servers;
  return {
    seed: s.seed,
    groups: Array.from({ length: c.data.numSparse }, (_, f) => ({ id: f, name: `C${f + 1}`, dim: c.model.embDim })),
    optimizer: s.optimizer as SparseOptimizerConfig, capacity: s.capacity, idBits: s.idBits, init: s.init,
    admitProbability: s.admitProbability, expireSteps: s.expireSteps,
  };
}
