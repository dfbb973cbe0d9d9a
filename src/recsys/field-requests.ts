// All feature fields of a batch as one routing, one lookup and one push (the trainer's
// hot path). Per field, the per-field client calls each build a hash table, a handful
// of typed arrays and a promise chain per server; for a DLRM step (26 fields, twice per
// step) that bookkeeping cost more trainer CPU than the model. Here every id of every
// field is deduplicated and routed in one pass, each server's distinct ids are laid out
// field after field in one array (so each field's ids are a contiguous block of it), and
// rows and gradients travel in one buffer per server. The wire protocol is unchanged: a
// request names one feature group, so each server still gets one LOOKUP and one PUSH per
// field with ids on it, all written in the same tick (one writev, see server-connection.ts).
import { fmix64, HI_RAW_MASK, idsToPairs, mixOut, type IdInput } from './embedding-hash.js';
import {
  LOOKUP_READ_ONLY, MsgType, PUSH_ADVANCE_STEP,
  decodeLookupResponse, decodePushResponse, decodeValues, encodeIdRequest, idRequestBytes, lookupResponseBytes, writeIdRequest,
  type PushResponse, type WireDType,
} from './protocol.js';
import type { ServerConnection } from './server-connection.js';

/** Ids of a batch's fields (ids[f] for group groups[f]), deduplicated and routed together. */
export class RoutedFields {
  constructor(
    readonly groups: readonly number[],
    /** Field f's ids are request indices [start[f], start[f + 1]). */
    readonly start: Int32Array,
    /** inverse[i]: distinct index of request index i. */
    readonly inverse: Int32Array,
    readonly uShard: Int32Array,
    readonly uPos: Int32Array,
    /** Per server: its distinct ids as (lo, hi) pairs, field after field. */
    readonly shardIds: Uint32Array[],
    /** Per server: field f's ids are positions [fieldStart[s][f], fieldStart[s][f + 1]) of shardIds[s]. */
    readonly fieldStart: Int32Array[],
  ) {}

  get n(): number { return this.start[this.start.length - 1]!; }
  get numShards(): number { return this.shardIds.length; }
  shardCount(s: number): number { return this.fieldStart[s]![this.groups.length]!; }
}

/** Writes ids of one group as tagged (lo, hi) pairs into out from pair index `at` (idsToPairs without the allocation). */
function writePairs(group: number, ids: IdInput, out: Uint32Array, at: number): void {
  const g = (group << 24) >>> 0, n = ids.length;
  if (ids instanceof BigUint64Array || ids instanceof BigInt64Array) {
    const v = new Uint32Array(ids.buffer, ids.byteOffset, 2 * n);
    for (let i = 0, o = 2 * at; i < 2 * n; i += 2, o += 2) {
      out[o] = v[i]!;
      out[o + 1] = ((v[i + 1]! & HI_RAW_MASK) | g) >>> 0;
    }
  } else out.set(idsToPairs(group, ids), 2 * at);
}

/**
 * Routes every field at once. Ids carry their group in the top bits, so one table
 * deduplicates all fields; distinct ids get positions on their server in order of first
 * occurrence, which is field order, so each field's ids form one block per server.
 */
export function routeFields(groups: readonly number[], ids: readonly IdInput[], numShards: number): RoutedFields {
  const F = groups.length;
  if (ids.length !== F) throw new Error(`embedding client: ${ids.length} id arrays for ${F} feature groups`);
  const start = new Int32Array(F + 1);
  for (let f = 0; f < F; f++) start[f + 1] = start[f]! + ids[f]!.length;
  const n = start[F]!;
  const pairs = new Uint32Array(2 * n);
  for (let f = 0; f < F; f++) writePairs(groups[f]!, ids[f]!, pairs, start[f]!);
  let size = 16;
  while (size < 2 * n) size *= 2;
  const mask = size - 1;
  const table = new Int32Array(size).fill(-1);
  const inverse = new Int32Array(n), uShard = new Int32Array(n), uPos = new Int32Array(n), uAt = new Int32Array(n);
  // counts[s * (F + 1) + f + 1]: distinct ids of field f on server s (prefix-summed below).
  const counts = new Int32Array(numShards * (F + 1));
  const shardCount = new Int32Array(numShards);
  let nu = 0;
  for (let f = 0; f < F; f++) {
    for (let i = start[f]!, e = start[f + 1]!; i < e; i++) {
      const lo = pairs[2 * i]!, hi = pairs[2 * i + 1]!;
      let b = fmix64(hi, lo) & mask;
      const shard = mixOut.hi % numShards;
      for (;;) {
        const u = table[b]!;
        if (u < 0) {
          table[b] = nu;
          uAt[nu] = i;
          uShard[nu] = shard;
          uPos[nu] = shardCount[shard]++;
          counts[shard * (F + 1) + f + 1]++;
          inverse[i] = nu++;
          break;
        }
        const j = uAt[u]!;
        if (pairs[2 * j] === lo && pairs[2 * j + 1] === hi) { inverse[i] = u; break; }
        b = (b + 1) & mask;
      }
    }
  }
  const shardIds: Uint32Array[] = [], fieldStart: Int32Array[] = [];
  for (let s = 0; s < numShards; s++) {
    const fs = counts.subarray(s * (F + 1), (s + 1) * (F + 1));
    for (let f = 0; f < F; f++) fs[f + 1] += fs[f]!;
    fieldStart.push(fs);
    shardIds.push(new Uint32Array(2 * shardCount[s]!));
  }
  for (let u = 0; u < nu; u++) {
    const d = shardIds[uShard[u]!]!, p = 2 * uPos[u]!, j = 2 * uAt[u]!;
    d[p] = pairs[j]!;
    d[p + 1] = pairs[j + 1]!;
  }
  return new RoutedFields(groups, start, inverse, uShard.subarray(0, nu), uPos.subarray(0, nu), shardIds, fieldStart);
}

export interface FieldWire { dim: number; dtype: WireDType; maxIds: number }

/**
 * Rows of every request index (n x dim, request order, i.e. field after field) into `out`.
 * Each server answers field by field into one buffer of its distinct rows, which is then
 * scattered to the request order.
 */
export async function lookupFields(conns: readonly ServerConnection[], rf: RoutedFields, w: FieldWire, out: Float32Array, readOnly: boolean): Promise<Float32Array> {
  const { dim, dtype, maxIds } = w, F = rf.groups.length;
  if (out.length !== rf.n * dim) throw new Error(`embedding client: lookup of ${rf.n} ids of dim ${dim} given an output of ${out.length} floats`);
  const flags = readOnly ? LOOKUP_READ_ONLY : 0;
  const shardRows = rf.shardIds.map((_, s) => new Float32Array(rf.shardCount(s) * dim));
  const parts: Promise<void>[] = [];
  conns.forEach((c, s) => {
    const ids = rf.shardIds[s]!, fs = rf.fieldStart[s]!, rows = shardRows[s]!;
    for (let f = 0; f < F; f++) {
      const group = rf.groups[f]!;
      for (let at = fs[f]!, end = fs[f + 1]!; at < end; at += maxIds) {
        const k = Math.min(maxIds, end - at), from = at;
        parts.push(c.requestShm(MsgType.LOOKUP, idRequestBytes(k, dtype, 0, false), lookupResponseBytes(dtype, k, dim),
          (dst) => writeIdRequest(dst, group, dtype, flags, ids, from, k),
          (id) => encodeIdRequest(MsgType.LOOKUP, id, group, dtype, flags, ids, from, k), (rep) => {
            const lr = decodeLookupResponse(rep.payload);
            if (lr.count !== k || lr.dim !== dim) throw new Error(`${c.name}: lookup answered ${lr.count}x${lr.dim}, asked ${k}x${dim}`);
            decodeValues(lr.dtype, lr.values, k * dim, rows, from * dim);
          }));
      }
    }
  });
  await Promise.all(parts);
  const { inverse, uShard, uPos } = rf, n = rf.n;
  for (let i = 0; i < n; i++) {
    const u = inverse[i]!;
    const src = shardRows[uShard[u]!]!, o = uPos[u]! * dim, d = i * dim;
    for (let j = 0; j < dim; j++) out[d + j] = src[o + j]!;
  }
  return out;
}

/**
 * Pushes gradients of every request index (n x dim, request order), summed per distinct
 * id (times `scale`, rounded as a scaled copy would be) into one buffer per server, then
 * sent field by field. Every server's last request of the call advances its step once
 * (an empty push where a server got no ids), as the last field's push does per field.
 */
export async function pushFields(conns: readonly ServerConnection[], rf: RoutedFields, w: FieldWire, grads: Float32Array, scale: number): Promise<PushResponse> {
  const { dim, dtype, maxIds } = w, F = rf.groups.length, n = rf.n;
  if (grads.length !== n * dim) throw new Error(`embedding client: push got ${grads.length} gradient values for ${n} ids of dim ${dim}`);
  const sums = rf.shardIds.map((_, s) => new Float32Array(rf.shardCount(s) * dim));
  const { inverse, uShard, uPos } = rf;
  for (let i = 0; i < n; i++) {
    const u = inverse[i]!;
    const d = sums[uShard[u]!]!, o = uPos[u]! * dim, g = i * dim;
    if (scale === 1) for (let j = 0; j < dim; j++) d[o + j] += grads[g + j]!;
    else for (let j = 0; j < dim; j++) d[o + j] += Math.fround(grads[g + j]! * scale);
  }
  const parts: Promise<PushResponse>[] = [];
  conns.forEach((c, s) => {
    const ids = rf.shardIds[s]!, fs = rf.fieldStart[s]!, data = { data: sums[s]!, dim };
    const total = fs[F]!;
    const send = (group: number, from: number, k: number, flags: number): void => {
      parts.push(c.requestShm(MsgType.PUSH, idRequestBytes(k, dtype, dim, false), 0,
        (dst) => writeIdRequest(dst, group, dtype, flags, ids, from, k, data),
        (id) => encodeIdRequest(MsgType.PUSH, id, group, dtype, flags, ids, from, k, data), (rep) => decodePushResponse(rep.payload)));
    };
    if (total === 0) { send(rf.groups[F - 1]!, 0, 0, PUSH_ADVANCE_STEP); return; }
    for (let f = 0; f < F; f++) {
      for (let at = fs[f]!, end = fs[f + 1]!; at < end; at += maxIds) {
        const k = Math.min(maxIds, end - at);
        send(rf.groups[f]!, at, k, at + k === total ? PUSH_ADVANCE_STEP : 0);
      }
    }
  });
  const replies = await Promise.all(parts);
  const r: PushResponse = { applied: 0, dropped: 0, step: 0 };
  for (const x of replies) { r.applied += x.applied; r.dropped += x.dropped; r.step = Math.max(r.step, x.step); }
  return r;
}
