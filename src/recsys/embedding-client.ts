// Client of a sharded embedding table. One TCP connection per server; every
// call deduplicates its ids, routes each distinct id to the server its hash
// names, sends one request per server (split only when a frame would exceed
// the servers' limit), and scatters the answers back into request order.
// Requests are pipelined: any number of lookups and pushes may be in flight,
// answers are matched by request id.
import { dedupPairs, idsToPairs, type IdInput } from './embedding-hash.js';
import type { ShardManifest, LoadResult } from './embedding-checkpoint.js';
import type { ConfigPatch, ShardStats } from './embedding-shard.js';
import type { ServerCounters } from './embedding-server.js';
import type { SparseOptimizerConfig } from './sparse-optimizer.js';
import {
  HEADER_BYTES, LOOKUP_READ_ONLY, LOOKUP_WITH_STATE, MsgType, PUSH_ADVANCE_STEP,
  decodeLookupResponse, decodePushResponse, decodeValues, encodeFrame, encodeIdRequest, idRequestBytes, lookupResponseBytes, wireBytes, writeIdRequest,
  type PushResponse, type WireDType,
} from './protocol.js';

import { ServerConnection, type EmbeddingEndpoint, type ReconnectOptions } from './server-connection.js';
import { FieldScratch, RoutedFields, lookupFields, pushFields, routeFields, type FieldWire } from './field-requests.js';

export type { EmbeddingEndpoint, ReconnectOptions };

export interface EmbeddingClientOptions {
  /** Server i must be shard i of servers.length. */
  servers: EmbeddingEndpoint[];
  token: string;
  /** How rows and gradients travel (default bfloat16). */
  wireDtype?: WireDType;
  connectTimeoutMs?: number;
  /** Reconnect to a restarted server and resend what was unanswered (default: a lost server fails every request). */
  reconnect?: ReconnectOptions;
  /**
   * Bytes of shared memory per server on this host for lookups and pushes (shm-region.ts;
   * default 8 MiB, reserved up front; 0 = sockets only). A server on another host, or a request larger than
   * the free room, goes over the socket.
   */
  sharedMemoryBytes?: number;
  /**
   * Move to a server's Unix socket when it runs on this host (it names one in its hello).
   * Default: with shared memory only. A Unix socket costs less per message than TCP
   * loopback (a saturated server spent 2-7% less CPU per shared-memory lookup + push in two
   * loaded runs), but its smaller buffers make a 300 KB payload cost the server extra
   * wake-ups, so a sockets-only client stays on TCP (embedding-server-bench.ts
   * --other-connection measures both ways).
   */
  unixSocket?: boolean;
}

export const DEFAULT_SHARED_MEMORY_BYTES = 8 << 20;

export interface ClusterStats {
  shards: Array<ShardStats & { server: ServerCounters }>;
  rows: number;
  addressableParams: number;
  residentParams: number;
  residentBytes: number;
}

/** Distinct ids of a batch and where each goes. */
export interface Routing {
  /** inverse[i] = distinct index of id i. */
  inverse: Int32Array;
  uShard: Int32Array;
  uPos: Int32Array;
  /** Per server: its distinct ids as (lo, hi) pairs. */
  shardIds: Uint32Array[];
  shardCount: Int32Array;
}

export function routeIds(pairs: Uint32Array, numShards: number): Routing {
  const n = pairs.length / 2;
  let size = 16;
  while (size < 2 * n) size *= 2;
  const table = new Int32Array(size).fill(-1);
  const inverse = new Int32Array(n), uShard = new Int32Array(n), uPos = new Int32Array(n), uAt = new Int32Array(n);
  const shardCount = new Int32Array(numShards);
  const nu = dedupPairs(pairs, n, numShards, table, inverse, uShard, uPos, uAt, shardCount);
  const shardIds = Array.from({ length: numShards }, (_, s) => new Uint32Array(2 * shardCount[s]!));
  for (let u = 0; u < nu; u++) {
    const d = shardIds[uShard[u]!]!, p = 2 * uPos[u]!, j = 2 * uAt[u]!;
    d[p] = pairs[j]!;
    d[p + 1] = pairs[j + 1]!;
  }
  return { inverse, uShard: uShard.subarray(0, nu), uPos: uPos.subarray(0, nu), shardIds, shardCount };
}

/**
 * A batch's ids already deduplicated and routed (client.route). A trainer that
 * looks up a batch and later pushes its gradients routes once and passes this
 * to both calls.
 */
export class RoutedBatch {
  constructor(readonly group: number, readonly n: number, readonly routing: Routing) {}
}

export class EmbeddingClient {
  readonly wireDtype: WireDType;
  private readonly dims = new Map<number, number>();
  /** Reused by routeFields / pushFields for what they read synchronously. */
  private readonly scratch = new FieldScratch();

  private constructor(private readonly conns: ServerConnection[], wireDtype: WireDType) {
    this.wireDtype = wireDtype;
    for (const g of conns[0]!.info.groups) this.dims.set(g.id, g.dim);
  }

  /** Connects and authenticates to every server; checks they form one table of servers.length shards. */
  static async connect(o: EmbeddingClientOptions): Promise<EmbeddingClient> {
    if (o.servers.length === 0) throw new Error('embedding client: no servers given');
    const timeout = o.connectTimeoutMs ?? 10_000;
    const conns: ServerConnection[] = [];
    try {
      for (let i = 0; i < o.servers.length; i++) {
        const shmBytes = o.sharedMemoryBytes ?? DEFAULT_SHARED_MEMORY_BYTES;
        const c = new ServerConnection(i, o.servers[i]!, o.token, timeout, o.reconnect ?? null, o.unixSocket ?? shmBytes > 0);
        conns.push(c);
        const info = await c.open();
        if (info.shardIndex !== i || info.numShards !== o.servers.length) {
          throw new Error(`${c.name}: is shard ${info.shardIndex} of ${info.numShards}, expected shard ${i} of ${o.servers.length}`);
        }
        if (shmBytes > 0) await c.attachShm(shmBytes);
        const g0 = JSON.stringify(conns[0]!.info.groups), gi = JSON.stringify(info.groups);
        if (g0 !== gi) throw new Error(`${c.name}: feature groups ${gi} differ from server 0's ${g0}`);
      }
    } catch (e) {
      for (const c of conns) c.close();
      throw e;
    }
    return new EmbeddingClient(conns, o.wireDtype ?? 'bfloat16');
  }

  get numShards(): number { return this.conns.length; }
  /** Per server: whether lookups and pushes travel through shared memory. */
  get sharedMemory(): boolean[] { return this.conns.map((c) => c.sharedMemory); }
  /** Per server: whether the connection is its Unix socket (same host) rather than TCP. */
  get unixSocket(): boolean[] { return this.conns.map((c) => c.unix); }
  groups(): Array<{ id: number; name: string; dim: number }> { return this.conns[0]!.info.groups; }

  dim(group: number): number {
    const d = this.dims.get(group);
    if (d === undefined) throw new Error(`embedding client: unknown feature group ${group} (servers have ${[...this.dims.keys()].join(', ')})`);
    return d;
  }

  /** Ids per frame so that neither the request nor its answer exceeds the servers' frame limit. */
  private maxIds(dim: number, stateFloats = 0): number {
    const budget = this.conns[0]!.info.maxFrameBytes - HEADER_BYTES - 16 - (stateFloats > 0 ? 8 : 0);
    return Math.max(1, Math.floor(budget / (8 + dim * wireBytes(this.wireDtype) + 4 * stateFloats)));
  }

  /** Deduplicates and routes a batch once, for a lookup and a push of the same ids. */
  route(group: number, ids: IdInput): RoutedBatch {
    this.dim(group);
    const pairs = idsToPairs(group, ids);
    return new RoutedBatch(group, pairs.length / 2, routeIds(pairs, this.conns.length));
  }

  private routed(group: number, ids: IdInput | RoutedBatch): RoutedBatch {
    if (!(ids instanceof RoutedBatch)) return this.route(group, ids);
    if (ids.group !== group || ids.routing.shardCount.length !== this.conns.length) throw new Error(`embedding client: batch routed for group ${ids.group} used with group ${group}`);
    return ids;
  }

  /**
   * Rows of `ids` (n x dim, float32, request order). Read-only lookups (inference) create and
   * touch nothing. With `out` (n x dim floats, e.g. one field's block of a batch buffer) the
   * rows are written there and `out` is returned.
   */
  async lookup(group: number, ids: IdInput | RoutedBatch, opts: { readOnly?: boolean; out?: Float32Array } = {}): Promise<Float32Array> {
    const dim = this.dim(group);
    const rb = this.routed(group, ids);
    const n = rb.n, r = rb.routing;
    if (opts.out && opts.out.length !== n * dim) throw new Error(`embedding client: lookup of ${n} ids of dim ${dim} given an output of ${opts.out.length} floats`);
    const shardRows = await this.fetchShards(group, rb, opts.readOnly ? LOOKUP_READ_ONLY : 0);
    const out = opts.out ?? new Float32Array(n * dim);
    const { inverse, uShard, uPos } = r;
    for (let i = 0; i < n; i++) {
      const u = inverse[i]!;
      const src = shardRows[uShard[u]!]!.rows, o = uPos[u]! * dim;
      for (let j = 0; j < dim; j++) out[i * dim + j] = src[o + j]!;
    }
    return out;
  }

  /**
   * Training lookup answered per distinct id (routing order u, as routing.uShard/uPos).
   * With `stateFor` (a byte per distinct id), the ids marked non-zero also get their
   * optimizer state (stateWidth floats each, at u * stateWidth in `state`; others stay 0).
   * scatterRows() puts distinct rows back into request order.
   */
  async lookupDistinct(group: number, rb: RoutedBatch, opts: { stateFor?: Uint8Array } = {}): Promise<{ rows: Float32Array; state: Float32Array | null; stateWidth: number }> {
    const dim = this.dim(group);
    const { uShard, uPos, shardCount } = rb.routing;
    const nu = uShard.length;
    let masks: Uint8Array[] | null = null;
    if (opts.stateFor) {
      if (opts.stateFor.length !== nu) throw new Error(`embedding client: stateFor has ${opts.stateFor.length} entries for ${nu} distinct ids`);
      masks = Array.from({ length: this.conns.length }, (_, sh) => new Uint8Array(shardCount[sh]!));
      for (let u = 0; u < nu; u++) masks[uShard[u]!]![uPos[u]!] = opts.stateFor[u]!;
    }
    const shardRows = await this.fetchShards(group, this.routed(group, rb), masks ? LOOKUP_WITH_STATE : 0, masks);
    const sw = masks ? Math.max(0, ...shardRows.map((x) => x.sw)) : 0;
    const rows = new Float32Array(nu * dim), state = sw > 0 ? new Float32Array(nu * sw) : null;
    // Packed state rows of each shard come in that shard's position order: unpack by position.
    const atPos = state ? Array.from({ length: this.conns.length }, (_, sh) => new Int32Array(shardCount[sh]!)) : null;
    for (let u = 0; u < nu; u++) {
      const sr = shardRows[uShard[u]!]!, p = uPos[u]!;
      rows.set(sr.rows.subarray(p * dim, (p + 1) * dim), u * dim);
      if (atPos) atPos[uShard[u]!]![p] = u;
    }
    if (state && atPos && masks) {
      shardRows.forEach((sr, sh) => {
        if (sr.sw !== sw && sr.state && sr.state.length > 0) throw new Error(`embedding client: group ${group}: servers disagree on the optimizer state width (${sr.sw} vs ${sw})`);
        const m = masks![sh]!, pos = atPos[sh]!;
        for (let p = 0, k = 0; p < m.length; p++) {
          if (m[p] === 0) continue;
          state.set(sr.state!.subarray(k * sw, (k + 1) * sw), pos[p]! * sw);
          k++;
        }
      });
    }
    return { rows, state, stateWidth: sw };
  }

  /** Distinct rows (routing order) -> request order (n x dim; into `out` when given). */
  scatterRows(rb: RoutedBatch, distinct: Float32Array, dim: number, out?: Float32Array): Float32Array {
    const { inverse } = rb.routing, n = rb.n;
    if (out && out.length !== n * dim) throw new Error(`embedding client: scatterRows of ${n} ids of dim ${dim} given an output of ${out.length} floats`);
    out ??= new Float32Array(n * dim);
    for (let i = 0; i < n; i++) {
      const o = inverse[i]! * dim;
      for (let j = 0; j < dim; j++) out[i * dim + j] = distinct[o + j]!;
    }
    return out;
  }

  /**
   * Routes a batch's fields together (field f's ids in group groups[f]; every group of the
   * same dim) for lookupFields and pushFields: the trainer's per-step path (field-requests.ts).
   */
  routeFields(groups: readonly number[], ids: readonly IdInput[]): RoutedFields {
    if (groups.length === 0) throw new Error('embedding client: routeFields needs at least one feature group');
    const dim = this.dim(groups[0]!);
    for (const g of groups) if (this.dim(g) !== dim) throw new Error(`embedding client: routeFields needs one dim for all groups (group ${g} has ${this.dim(g)}, group ${groups[0]} has ${dim})`);
    return routeFields(groups, ids, this.conns.length, this.scratch);
  }

  private fieldWire(rf: RoutedFields): FieldWire {
    if (rf.numShards !== this.conns.length) throw new Error(`embedding client: fields routed for ${rf.numShards} servers used with ${this.conns.length}`);
    const dim = this.dim(rf.groups[0]!);
    return { dim, dtype: this.wireDtype, maxIds: this.maxIds(dim) };
  }

  /** Rows of every field's ids (request order: field after field) into `out` (n x dim). */
  lookupFields(rf: RoutedFields, out: Float32Array, opts: { readOnly?: boolean } = {}): Promise<Float32Array> {
    return lookupFields(this.conns, rf, this.fieldWire(rf), out, opts.readOnly ?? false);
  }

  /**
   * Gradients of every field's ids (n x dim, request order), times `scale`; each server's
   * step advances once. `grads` is read before this returns: the caller may reuse it.
   */
  pushFields(rf: RoutedFields, grads: Float32Array, opts: { scale?: number } = {}): Promise<PushResponse> {
    return pushFields(this.conns, rf, this.fieldWire(rf), grads, opts.scale ?? 1, this.scratch);
  }

  /** The sparse optimizer the servers run for `group` (from the servers' hello), or null if they did not say. */
  optimizer(group: number): SparseOptimizerConfig | null {
    return this.conns[0]!.info.optimizers?.[String(group)] ?? null;
  }

  /** Per server: its distinct rows of the batch in that server's order (and the masked ids' state, packed). */
  private async fetchShards(group: number, rb: RoutedBatch, flags: number, masks: Uint8Array[] | null = null): Promise<Array<{ rows: Float32Array; state: Float32Array | null; sw: number }>> {
    const dim = this.dim(group);
    const r = rb.routing;
    const dtype = this.wireDtype, maxIds = this.maxIds(dim, masks ? 2 * dim : 0);
    return Promise.all(this.conns.map(async (c, s) => {
      const cnt = r.shardCount[s]!;
      const rows = new Float32Array(cnt * dim);
      const mask = masks?.[s];
      // Where each part's packed state rows go: masked ids before its start.
      const before = new Int32Array(cnt + 1);
      if (mask) for (let p = 0; p < cnt; p++) before[p + 1] = before[p]! + (mask[p] !== 0 ? 1 : 0);
      let state: Float32Array | null = null, sw = 0;
      const parts: Promise<void>[] = [];
      for (let start = 0; start < cnt; start += maxIds) {
        const k = Math.min(maxIds, cnt - start);
        // Room for the answer: state rows at most 2 * dim floats (Adam) for the masked ids.
        const respCap = lookupResponseBytes(dtype, k, dim, mask ? 2 * dim : 0, mask ? before[start + k]! - before[start]! : 0);
        parts.push(c.requestShm(MsgType.LOOKUP, idRequestBytes(k, dtype, 0, !!mask), respCap,
          (dst) => writeIdRequest(dst, group, dtype, flags, r.shardIds[s]!, start, k, undefined, mask),
          (id) => encodeIdRequest(MsgType.LOOKUP, id, group, dtype, flags, r.shardIds[s]!, start, k, undefined, mask), (rep) => {
          const lr = decodeLookupResponse(rep.payload);
          if (lr.count !== k || lr.dim !== dim) throw new Error(`${c.name}: lookup answered ${lr.count}x${lr.dim}, asked ${k}x${dim}`);
          decodeValues(lr.dtype, lr.values, k * dim, rows, start * dim);
          if (mask && lr.stateWidth > 0) {
            const m = before[start + k]! - before[start]!;
            if (lr.state!.length !== m * lr.stateWidth) throw new Error(`${c.name}: lookup answered ${lr.state!.length / lr.stateWidth} state rows, asked ${m}`);
            if (!state) { sw = lr.stateWidth; state = new Float32Array(before[cnt]! * sw); }
            if (lr.stateWidth !== sw) throw new Error(`${c.name}: lookup answered state width ${lr.stateWidth}, earlier ${sw}`);
            state.set(lr.state!, before[start]! * sw);
          }
        }));
      }
      await Promise.all(parts);
      return { rows, state, sw };
    }));
  }

  /**
   * Sends gradients (n x dim, request order); duplicate ids are summed here and
   * again on the server. With advanceStep (default) every server's step counter
   * moves on once this push is applied (admission and expiry count these steps);
   * a trainer pushing several groups per step passes false for all but the last.
   * With `scale`, every gradient value is multiplied by it as it is summed (default 1).
   */
  async pushGrads(group: number, ids: IdInput | RoutedBatch, grads: Float32Array, opts: { advanceStep?: boolean; scale?: number } = {}): Promise<PushResponse> {
    const dim = this.dim(group);
    const rb = this.routed(group, ids);
    const n = rb.n, r = rb.routing;
    if (grads.length !== n * dim) throw new Error(`embedding client: pushGrads got ${grads.length} gradient values for ${n} ids of dim ${dim}`);
    const sums = Array.from({ length: this.conns.length }, (_, s) => new Float32Array(r.shardCount[s]! * dim));
    const { inverse, uShard, uPos } = r;
    const scale = opts.scale ?? 1;
    if (scale === 1) {
      for (let i = 0; i < n; i++) {
        const u = inverse[i]!;
        const d = sums[uShard[u]!]!, o = uPos[u]! * dim;
        for (let j = 0; j < dim; j++) d[o + j] += grads[i * dim + j]!;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const u = inverse[i]!;
        const d = sums[uShard[u]!]!, o = uPos[u]! * dim;
        // Rounded as a scaled copy would be, so the sums equal scaling first, then pushing.
        for (let j = 0; j < dim; j++) d[o + j] += Math.fround(grads[i * dim + j]! * scale);
      }
    }
    const advance = opts.advanceStep ?? true;
    const dtype = this.wireDtype, maxIds = this.maxIds(dim);
    const replies = await Promise.all(this.conns.map(async (c, s) => {
      const cnt = r.shardCount[s]!;
      if (cnt === 0 && !advance) return [];
      const parts: Promise<PushResponse>[] = [];
      let start = 0;
      do {
        const k = Math.min(maxIds, cnt - start);
        const flags = advance && start + k >= cnt ? PUSH_ADVANCE_STEP : 0;
        const at = start;
        const g = { data: sums[s]!, dim };
        parts.push(c.requestShm(MsgType.PUSH, idRequestBytes(k, dtype, dim, false), 0,
          (dst) => writeIdRequest(dst, group, dtype, flags, r.shardIds[s]!, at, k, g),
          (id) => encodeIdRequest(MsgType.PUSH, id, group, dtype, flags, r.shardIds[s]!, at, k, g), (rep) => decodePushResponse(rep.payload)));
        start += k;
      } while (start < cnt);
      return Promise.all(parts);
    }));
    const total: PushResponse = { applied: 0, dropped: 0, step: 0 };
    for (const rs of replies) for (const x of rs) { total.applied += x.applied; total.dropped += x.dropped; total.step = Math.max(total.step, x.step); }
    return total;
  }

  async stats(): Promise<ClusterStats> {
    const shards = await Promise.all(this.conns.map((c) => c.json<ShardStats & { server: ServerCounters }>(MsgType.STATS, {})));
    const sum = (f: (s: ShardStats) => number): number => shards.reduce((a, s) => a + f(s), 0);
    return {
      shards,
      rows: sum((s) => s.groups.reduce((a, g) => a + g.rows, 0)),
      addressableParams: sum((s) => s.addressableParams),
      residentParams: sum((s) => s.residentParams),
      residentBytes: sum((s) => s.residentBytes),
    };
  }

  /** Every server writes its shard into `dir` (one consistent dumpId for the set). */
  dump(dir: string, dumpId = `d${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`): Promise<ShardManifest[]> {
    return Promise.all(this.conns.map((c) => c.json<ShardManifest>(MsgType.DUMP, { dir, dumpId })));
  }

  /** Every server replaces its contents with the rows of the checkpoint in `dir` that hash to it (re-sharding if needed). */
  load(dir: string, dumpId?: string): Promise<LoadResult[]> {
    return Promise.all(this.conns.map((c) => c.json<LoadResult>(MsgType.LOAD, dumpId === undefined ? { dir } : { dir, dumpId })));
  }

  /** Changes optimizer hyperparameters (a new optimizer kind resets state), admission probability or expiry. */
  async setConfig(patch: ConfigPatch): Promise<void> {
    await Promise.all(this.conns.map((c) => c.json(MsgType.SET_CONFIG, patch)));
  }

  async ping(): Promise<void> {
    await Promise.all(this.conns.map((c) => c.request((id) => encodeFrame(MsgType.PING, id), MsgType.PING)));
  }

  close(): void {
    for (const c of this.conns) c.close();
  }
}
