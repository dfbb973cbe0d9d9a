// Hybrid sharded data parallelism (HSDP, FSDP's HYBRID_SHARD): the data-parallel ranks
// split into dp/S shard groups of S neighbouring ranks. ZeRO-3 shards parameters,
// gradients and optimizer state inside a shard group (its gathers and reduce-scatters
// never leave it, so they stay on fast intra-node links); the dp/S groups are replicas,
// and after the in-group reduce-scatter each shard gradient is all-reduced (averaged)
// over the replica group: the ranks that hold the same shard in every other group.
import type { GradComm } from './data-parallel.js';
import { SingleMemberComm } from './grad-comm.js';

export interface ParallelShardSettings {
  dp: number;
  tp: number;
  zero: number;
  shardGroup: number;
}

/** Checks the fully-shard (ZeRO-3 / HSDP) settings, naming the field. */
export function validateFullyShard(p: ParallelShardSettings): void {
  if (p.zero === 3 && p.tp > 1) {
    throw new Error(`parallel.zero=3 with parallel.tp=${p.tp}: ZeRO-3 is not combined with tensor parallelism (its gather units are whole blocks, not tensor-parallel shards); use parallel.zero=1 or 2 beside parallel.tp`);
  }
  const s = p.shardGroup;
  if (!Number.isInteger(s) || s < 0) throw new Error(`parallel.shardGroup must be a non-negative integer (0 = shard over the whole data-parallel group), got ${s}`);
  if (s === 0) return;
  if (p.zero !== 3) throw new Error(`parallel.shardGroup=${s} needs parallel.zero=3 (HSDP shards parameters inside groups of parallel.shardGroup ranks), got parallel.zero=${p.zero}`);
  if (p.dp % s !== 0) throw new Error(`parallel.shardGroup (${s}) must divide parallel.dp (${p.dp}): the data-parallel ranks form dp/shardGroup replica groups`);
}

export interface HsdpRanks {
  /** Global ranks of this rank's shard group and replica group, in group-rank order. */
  shard: number[];
  replica: number[];
  shardRank: number;
  replicaRank: number;
}

/**
 * The shard and replica groups of data-parallel index `dpIndex` (dpRanks: the global
 * ranks of its dp group, in dp order). Shard group g is dp indices [gS, gS + S); the
 * replica group of index i is i mod S, i mod S + S, ..., so rank k of every shard group
 * holds the same slice and their gradients average over the replica group.
 */
export function hsdpRanks(dpRanks: readonly number[], dpIndex: number, shardGroup: number): HsdpRanks {
  const dp = dpRanks.length, S = shardGroup;
  if (S < 1 || dp % S !== 0) throw new Error(`HSDP: shard group ${S} does not divide dp ${dp}`);
  const g = Math.floor(dpIndex / S), k = dpIndex % S;
  return {
    shard: dpRanks.slice(g * S, g * S + S),
    replica: dpRanks.filter((_, i) => i % S === k),
    shardRank: k,
    replicaRank: g,
  };
}

/** A group's collectives and this rank's place in it. */
export interface MemberComm {
  comm: GradComm;
  rank: number;
  size: number;
}

export interface HsdpGroups {
  shard: MemberComm;
  replica: MemberComm;
}

/** Something that makes sub-groups over global ranks (a communication thread). */
export interface GroupMaker {
  newGroup(globalRanks: readonly number[], name?: string): GradComm;
}

/** Builds both groups on `thread` (every dp rank calls it, in the same order). */
export function hsdpGroups(thread: GroupMaker, dpRanks: readonly number[], dpIndex: number, shardGroup: number): HsdpGroups {
  const r = hsdpRanks(dpRanks, dpIndex, shardGroup);
  // A thread names a group by its rank list, so members agree without a rendezvous; a
  // group of one (S = 1, or S = dp) needs no thread at all.
  const make = (ranks: number[], name: string): GradComm => (ranks.length === 1 ? new SingleMemberComm() : thread.newGroup(ranks, name));
  return {
    shard: { comm: make(r.shard, 'dp-shard'), rank: r.shardRank, size: r.shard.length },
    replica: { comm: make(r.replica, 'dp-replica'), rank: r.replicaRank, size: r.replica.length },
  };
}
