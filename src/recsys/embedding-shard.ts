// Everything one embedding server holds: a GroupTable per configured feature
// group, the server step (advanced by pushes that end a training step), and the
// capacity accounting the stats request reports.
import type { EmbeddingServerConfig, GroupConfig } from './embedding-config.js';
import { GroupTable, type GroupCounters } from './embedding-store.js';
import { MAX_GROUPS } from './embedding-hash.js';
import { parseOptimizer, type SparseOptimizerConfig } from './sparse-optimizer.js';

export interface GroupStats {
  id: number;
  name: string;
  dim: number;
  optimizer: SparseOptimizerConfig;
  stateWidth: number;
  capacity: number;
  rows: number;
  /** This shard's share of 2^idBits ids x dim: what it can address, independent of what is in memory (sums to the table's figure). */
  addressableParams: number;
  /** Rows in memory x (dim + optimizer state per row). */
  residentParams: number;
  /** Rows in memory x dim (embedding values only). */
  residentEmbeddingParams: number;
  residentBytes: number;
  allocatedBytes: number;
  admitProbability: number;
  expireSteps: number;
  counters: GroupCounters;
}

export interface ShardStats {
  shardIndex: number;
  numShards: number;
  step: number;
  groups: GroupStats[];
  addressableParams: number;
  residentParams: number;
  residentBytes: number;
  allocatedBytes: number;
  rssBytes: number;
  cpuUserMs: number;
  cpuSystemMs: number;
  /** Context switches of the server process (getrusage): waits for input, and preemptions. */
  voluntaryContextSwitches?: number;
  involuntaryContextSwitches?: number;
}

export interface ConfigPatch {
  /** Group to change; all groups when absent. */
  group?: number;
  optimizer?: SparseOptimizerConfig;
  admitProbability?: number;
  expireSteps?: number;
}

export class EmbeddingShard {
  readonly tables: Array<GroupTable | undefined> = new Array(MAX_GROUPS).fill(undefined);
  step = 0;

  constructor(readonly config: EmbeddingServerConfig, readonly shardIndex: number, readonly numShards: number) {
    if (!Number.isInteger(numShards) || numShards < 1) throw new Error(`embedding shard: num-shards must be >= 1 (got ${numShards})`);
    if (!Number.isInteger(shardIndex) || shardIndex < 0 || shardIndex >= numShards) {
      throw new Error(`embedding shard: shard index ${shardIndex} out of range [0, ${numShards})`);
    }
    for (const g of config.groups) this.tables[g.id] = this.makeTable(g);
  }

  makeTable(g: GroupConfig): GroupTable {
    const t = new GroupTable(g, this.config.seed);
    t.shardIndex = this.shardIndex;
    t.numShards = this.numShards;
    return t;
  }

  table(group: number): GroupTable {
    const t = group >= 0 && group < MAX_GROUPS ? this.tables[group] : undefined;
    if (!t) throw new Error(`shard ${this.shardIndex}: unknown feature group ${group}`);
    return t;
  }

  lookup(group: number, ids: Uint32Array, n: number, readOnly: boolean, out?: Float32Array): Float32Array {
    const t = this.table(group);
    const rows = out ?? new Float32Array(n * t.dim);
    t.lookup(ids, n, rows, this.step, readOnly);
    return rows;
  }

  push(group: number, ids: Uint32Array, n: number, grads: Float32Array, advanceStep: boolean): { applied: number; dropped: number; step: number } {
    const r = this.table(group).push(ids, n, grads, this.step);
    if (advanceStep) this.advanceStep();
    return { ...r, step: this.step };
  }

  /** push() with bfloat16 gradients (GroupTable.pushBf16: read in place where the kernels allow). */
  pushBf16(group: number, ids: Uint32Array, n: number, g16: Uint16Array, advanceStep: boolean): { applied: number; dropped: number; step: number } {
    const r = this.table(group).pushBf16(ids, n, g16, this.step);
    if (advanceStep) this.advanceStep();
    return { ...r, step: this.step };
  }

  advanceStep(): void {
    this.step++;
    for (const t of this.tables) if (t) t.sweepExpired(this.step);
  }

  setConfig(p: ConfigPatch): void {
    const targets = p.group === undefined ? this.tables.filter((t): t is GroupTable => !!t) : [this.table(p.group)];
    if (p.admitProbability !== undefined && !(p.admitProbability >= 0 && p.admitProbability <= 1)) {
      throw new Error(`set-config: field 'admitProbability' must be in [0, 1]`);
    }
    if (p.expireSteps !== undefined && !(Number.isInteger(p.expireSteps) && p.expireSteps >= 0)) {
      throw new Error(`set-config: field 'expireSteps' must be an integer >= 0`);
    }
    const opt = p.optimizer === undefined ? undefined : parseOptimizer(p.optimizer, 'set-config.optimizer');
    for (const t of targets) {
      if (opt) t.setOptimizer(opt);
      const pol: { admitProbability?: number; expireSteps?: number } = {};
      if (p.admitProbability !== undefined) pol.admitProbability = p.admitProbability;
      if (p.expireSteps !== undefined) pol.expireSteps = p.expireSteps;
      t.setPolicy(pol);
      t.sweepExpired(this.step);
    }
  }

  stats(): ShardStats {
    const groups: GroupStats[] = [];
    let addressable = 0, resident = 0, rb = 0, ab = 0;
    for (const t of this.tables) {
      if (!t) continue;
      const m = t.memory();
      const g: GroupStats = {
        id: t.cfg.id, name: t.cfg.name, dim: t.dim, optimizer: t.cfg.optimizer, stateWidth: t.stW,
        capacity: t.capacity, rows: t.count,
        addressableParams: (2 ** t.cfg.idBits * t.dim) / this.numShards,
        residentParams: t.count * (t.dim + t.stW),
        residentEmbeddingParams: t.count * t.dim,
        residentBytes: m.residentBytes, allocatedBytes: m.allocatedBytes,
        admitProbability: t.cfg.admitProbability, expireSteps: t.cfg.expireSteps,
        counters: { ...t.counters },
      };
      groups.push(g);
      addressable += g.addressableParams;
      resident += g.residentParams;
      rb += g.residentBytes;
      ab += g.allocatedBytes;
    }
    const cpu = process.cpuUsage(), ru = process.resourceUsage();
    return {
      shardIndex: this.shardIndex, numShards: this.numShards, step: this.step, groups,
      addressableParams: addressable, residentParams: resident, residentBytes: rb, allocatedBytes: ab,
      rssBytes: process.memoryUsage().rss, cpuUserMs: cpu.user / 1000, cpuSystemMs: cpu.system / 1000,
      voluntaryContextSwitches: ru.voluntaryContextSwitches, involuntaryContextSwitches: ru.involuntaryContextSwitches,
    };
  }
}
