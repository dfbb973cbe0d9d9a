// Configuration of an embedding server (one JSON file shared by every shard of
// a table). Plain data: the launcher writes it, each server process parses it.
import { MAX_GROUPS, RAW_ID_BITS } from './embedding-hash.js';
import { parseOptimizer, type SparseOptimizerConfig } from './sparse-optimizer.js';

export type InitConfig =
  | { kind: 'uniform'; scale: number } // uniform(-scale, scale), seeded by (seed, id)
  | { kind: 'zeros' };

export interface GroupConfig {
  /** Feature-group id: the top 8 bits of every feature id of this group. */
  id: number;
  name: string;
  dim: number;
  /** Most rows this group keeps resident on one server; the least recently used row is evicted beyond it. */
  capacity: number;
  /** Size of the group's id space in bits (<= 56); only used to report addressable parameters. */
  idBits: number;
  init: InitConfig;
  optimizer: SparseOptimizerConfig;
  /** Probability that an unseen id is stored (1 = always). */
  admitProbability: number;
  /** Rows untouched for more than this many server steps are dropped (0 = never). */
  expireSteps: number;
}

export interface EmbeddingServerConfig {
  groups: GroupConfig[];
  /** Seed of the row initializer and of admission decisions; every shard of a table must share it. */
  seed: number;
  /** Largest frame (header + payload) accepted from an authenticated client. */
  maxFrameBytes: number;
}

export interface EmbeddingServerConfigInput {
  groups: Array<Partial<GroupConfig> & { id: number; dim: number }>;
  seed?: number;
  maxFrameBytes?: number;
  /** Defaults for every group that does not set its own. */
  optimizer?: SparseOptimizerConfig;
  capacity?: number;
  idBits?: number;
  init?: InitConfig;
  admitProbability?: number;
  expireSteps?: number;
}

export const DEFAULT_MAX_FRAME_BYTES = 64 << 20;

function int(v: unknown, where: string, field: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new Error(`${where}: field '${field}' must be an integer in [${lo}, ${hi}] (got ${JSON.stringify(v)})`);
  }
  return v;
}

function prob(v: unknown, where: string, field: string): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new Error(`${where}: field '${field}' must be a number in [0, 1] (got ${JSON.stringify(v)})`);
  return v;
}

export function parseInit(x: unknown, where: string): InitConfig {
  if (typeof x !== 'object' || x === null) throw new Error(`${where}: field 'init' must be an object`);
  const o = x as Record<string, unknown>;
  if (o.kind === 'zeros') return { kind: 'zeros' };
  if (o.kind === 'uniform') {
    const s = o.scale;
    if (typeof s !== 'number' || !(s >= 0) || !Number.isFinite(s)) throw new Error(`${where}: field 'init.scale' must be a finite number >= 0`);
    return { kind: 'uniform', scale: s };
  }
  throw new Error(`${where}: field 'init.kind' must be 'uniform' or 'zeros' (got ${JSON.stringify(o.kind)})`);
}

/** Validates and fills defaults; `where` names the file in error messages. */
export function parseServerConfig(x: unknown, where: string): EmbeddingServerConfig {
  if (typeof x !== 'object' || x === null) throw new Error(`${where}: config must be a JSON object`);
  const o = x as Record<string, unknown>;
  if (!Array.isArray(o.groups) || o.groups.length === 0) throw new Error(`${where}: field 'groups' must be a non-empty array`);
  const seed = int(o.seed ?? 0, where, 'seed', 0, 0xffffffff);
  const maxFrameBytes = int(o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES, where, 'maxFrameBytes', 1024, 2 ** 31 - 1);
  const seen = new Set<number>();
  const groups = o.groups.map((g: unknown, i: number): GroupConfig => {
    const gw = `${where}: groups[${i}]`;
    if (typeof g !== 'object' || g === null) throw new Error(`${gw} must be an object`);
    const r = g as Record<string, unknown>;
    const id = int(r.id, gw, 'id', 0, MAX_GROUPS - 1);
    if (seen.has(id)) throw new Error(`${gw}: duplicate group id ${id}`);
    seen.add(id);
    const dim = int(r.dim, gw, 'dim', 1, 65536);
    return {
      id, dim,
      name: typeof r.name === 'string' ? r.name : `group${id}`,
      capacity: int(r.capacity ?? o.capacity ?? 1 << 20, gw, 'capacity', 1, 2 ** 30),
      idBits: int(r.idBits ?? o.idBits ?? RAW_ID_BITS, gw, 'idBits', 1, RAW_ID_BITS),
      init: parseInit(r.init ?? o.init ?? { kind: 'uniform', scale: 0.01 }, gw),
      optimizer: parseOptimizer(r.optimizer ?? o.optimizer ?? { kind: 'adagrad' }, `${gw}.optimizer`),
      admitProbability: prob(r.admitProbability ?? o.admitProbability ?? 1, gw, 'admitProbability'),
      expireSteps: int(r.expireSteps ?? o.expireSteps ?? 0, gw, 'expireSteps', 0, 2 ** 31 - 1),
    };
  });
  return { groups, seed, maxFrameBytes };
}
