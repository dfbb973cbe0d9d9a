// All feature fields of a batch as one routing, one lookup and one push (the trainer's
// hot path). Per field, the per-field client calls each build a hash table, a handful
// of typed arrays and a promise chain per server; for a DLRM step (26 fields, twice per
// step) that bookkeeping cost more trainer CPU than the model. Here every id of every
// field is deduplicated and routed in one pass, each server's distinct ids are laid out
// field after field in one array (so each field's ids are a contiguous block of it), and
// rows and gradients travel in one buffer per server. The wire protocol is unchanged: a
// request names one feature group, so each server still gets one LOOKUP and one PUSH per
// field with ids on it, all written in the same tick (one writev, see server-connection.ts).
import { dedupPairs, HI_RAW_MASK, idsToPairs, type IdInput } from './embedding-hash.js';
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
    /** first[u]: the request index where distinct id u first occurs. */
    readonly first: Int32Array,
    /** Per server: its distinct ids as (lo, hi) pairs, field after field. */
    readonly shardIds: Uint32Array[],
    /** Per server: field f's ids are positions [fieldStart[s][f], fieldStart[s][f + 1]) of shardIds[s]. */
    readonly fieldStart: Int32Array[],
    /** Per server: the request index where the id at each position first occurs. */
    readonly shardFirst: Int32Array[],
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
 * Buffers a client reuses between calls for what a call reads only synchronously (the
 * ids and hash table of a routing, the per-server gradient sums of a push), so a step
 * does not allocate (and the collector free) them again.
 */
export class FieldScratch {
  private buf = new ArrayBuffer(0);
  /** `count` values of each kind, laid out in one reused buffer (8-aligned parts; contents undefined). */
  take(...parts: Array<['u32' | 'i32' | 'f32', number]>): Array<Uint32Array | Int32Array | Float32Array> {
    let bytes = 0;
    for (const [, n] of parts) bytes += (4 * n + 7) & ~7;
    if (this.buf.byteLength < bytes) this.buf = new ArrayBuffer(Math.max(bytes, 2 * this.buf.byteLength));
    let o = 0;
    return parts.map(([k, n]) => {
      const v = k === 'u32' ? new Uint32Array(this.buf, o, n) : k === 'i32' ? new Int32Array(this.buf, o, n) : new Float32Array(this.buf, o, n);
      o += (4 * n + 7) & ~7;
      return v;
    });
  }
}

/**
 * Routes every field at once. Ids carry their group in the top bits, so one table
 * deduplicates all fields; distinct ids get positions on their server in order of first
 * occurrence, which is field order, so each field's ids form one block per server.
 */
export function routeFields(groups: readonly number[], ids: readonly IdInput[], numShards: number, scratch = new FieldScratch()): RoutedFields {
  const F = groups.length;
  if (ids.length !== F) throw new Error(`embedding client: ${ids.length} id arrays for ${F} feature groups`);
  const start = new Int32Array(F + 1);
  for (let f = 0; f < F; f++) start[f + 1] = start[f]! + ids[f]!.length;
  const n = start[F]!;
  let size = 16;
  while (size < 2 * n) size *= 2;
  const [pairs, table] = scratch.take(['u32', 2 * n], ['i32', size]) as [Uint32Array, Int32Array];
  table.fill(-1);
  for (let f = 0; f < F; f++) writePairs(groups[f]!, ids[f]!, pairs, start[f]!);
  // What the routing keeps (it outlives this call): one allocation, cut into views.
  const keep = new Int32Array(4 * n);
  const inverse = keep.subarray(0, n), uShard = keep.subarray(n, 2 * n), uPos = keep.subarray(2 * n, 3 * n), uAt = keep.subarray(3 * n, 4 * n);
  // counts[s * (F + 1) + f + 1]: distinct ids of field f on server s (prefix-summed below).
  const counts = new Int32Array(numShards * (F + 1));
  const shardCount = new Int32Array(numShards);
  const nu = dedupPairs(pairs, n, numShards, table, inverse, uShard, uPos, uAt, shardCount);
  // First occurrences rise with u, so one walk over the fields finds each distinct id's field.
  for (let u = 0, f = 0; u < nu; u++) {
    while (uAt[u]! >= start[f + 1]!) f++;
    counts[uShard[u]! * (F + 1) + f + 1]++;
  }
  const shardIds: Uint32Array[] = [], fieldStart: Int32Array[] = [], shardFirst: Int32Array[] = [];
  const idWords = new Uint32Array(2 * nu), firsts = new Int32Array(nu);
  for (let s = 0, o = 0; s < numShards; s++) {
    const fs = counts.subarray(s * (F + 1), (s + 1) * (F + 1));
    for (let f = 0; f < F; f++) fs[f + 1] += fs[f]!;
    fieldStart.push(fs);
    shardIds.push(idWords.subarray(2 * o, 2 * (o + shardCount[s]!)));
    shardFirst.push(firsts.subarray(o, o + shardCount[s]!));
    o += shardCount[s]!;
  }
  for (let u = 0; u < nu; u++) {
    const s = uShard[u]!, p = uPos[u]!, i = uAt[u]!;
    const d = shardIds[s]!;
    d[2 * p] = pairs[2 * i]!;
    d[2 * p + 1] = pairs[2 * i + 1]!;
    shardFirst[s]![p] = i;
  }
  return new RoutedFields(groups, start, inverse, uShard.subarray(0, nu), uPos.subarray(0, nu), uAt.subarray(0, nu), shardIds, fieldStart, shardFirst);
}

export interface FieldWire { dim: number; dtype: WireDType; maxIds: number }

/**
 * Decodes rows [0, k) of an answer (wire dtype `d`, dim values each) into out at the
 * request index first[at + r] of each row: a row lands where its id first occurs.
 */
function decodeRowsTo(d: WireDType, src: Uint8Array, k: number, dim: number, out: Float32Array, first: Int32Array, at: number): void {
  if (d === 'float32') {
    const v = new Float32Array(src.buffer, src.byteOffset, k * dim);
    for (let r = 0; r < k; r++) out.set(v.subarray(r * dim, (r + 1) * dim), first[at + r]! * dim);
    return;
  }
  if (d === 'bfloat16') {
    // bfloat16 is the top half of a float32: widen with a shift, no float conversion.
    const h = new Uint16Array(src.buffer, src.byteOffset, k * dim), o32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
    for (let r = 0; r < k; r++) {
      const o = first[at + r]! * dim, q = r * dim;
      for (let j = 0; j < dim; j++) o32[o + j] = h[q + j]! << 16;
    }
    return;
  }
  const tmp = new Float32Array(dim);
  for (let r = 0; r < k; r++) {
    decodeValues(d, src.subarray(2 * r * dim, 2 * (r + 1) * dim), dim, tmp);
    out.set(tmp, first[at + r]! * dim);
  }
}

/**
 * Rows of every request index (n x dim, request order, i.e. field after field) into `out`.
 * Each answer's rows are decoded straight to where their ids first occur in the request;
 * repeated ids are then copied from there.
 */
export async function lookupFields(conns: readonly ServerConnection[], rf: RoutedFields, w: FieldWire, out: Float32Array, readOnly: boolean): Promise<Float32Array> {
  const { dim, dtype, maxIds } = w, F = rf.groups.length;
  if (out.length !== rf.n * dim) throw new Error(`embedding client: lookup of ${rf.n} ids of dim ${dim} given an output of ${out.length} floats`);
  const flags = readOnly ? LOOKUP_READ_ONLY : 0;
  const parts: Promise<void>[] = [];
  conns.forEach((c, s) => {
    const ids = rf.shardIds[s]!, fs = rf.fieldStart[s]!, first = rf.shardFirst[s]!;
    for (let f = 0; f < F; f++) {
      const group = rf.groups[f]!;
      for (let at = fs[f]!, end = fs[f + 1]!; at < end; at += maxIds) {
        const k = Math.min(maxIds, end - at), from = at;
        parts.push(c.requestShm(MsgType.LOOKUP, idRequestBytes(k, dtype, 0, false), lookupResponseBytes(dtype, k, dim),
          (dst) => writeIdRequest(dst, group, dtype, flags, ids, from, k),
          (id) => encodeIdRequest(MsgType.LOOKUP, id, group, dtype, flags, ids, from, k), (rep) => {
            const lr = decodeLookupResponse(rep.payload);
            if (lr.count !== k || lr.dim !== dim) throw new Error(`${c.name}: lookup answered ${lr.count}x${lr.dim}, asked ${k}x${dim}`);
            decodeRowsTo(lr.dtype, lr.values, k, dim, out, first, from);
          }));
      }
    }
  });
  await Promise.all(parts);
  const { inverse, first } = rf, n = rf.n;
  for (let i = 0; i < n; i++) {
    const src = first[inverse[i]!]!;
    if (src === i) continue;
    out.copyWithin(i * dim, src * dim, (src + 1) * dim);
  }
  return out;
}

/**
 * Pushes gradients of every request index (n x dim, request order), summed per distinct
 * id (times `scale`, rounded as a scaled copy would be) into one buffer per server, then
 * sent field by field. Every server's last request of the call advances its step once
 * (an empty push where a server got no ids), as the last field's push does per field.
 * `grads` and the sums are read before this returns (every request is encoded at once),
 * so the caller may reuse `grads`, and the sums live in the scratch buffer.
 */
export function pushFields(conns: readonly ServerConnection[], rf: RoutedFields, w: FieldWire, grads: Float32Array, scale: number, scratch = new FieldScratch()): Promise<PushResponse> {
  const { dim, dtype, maxIds } = w, F = rf.groups.length, n = rf.n;
  if (grads.length !== n * dim) return Promise.reject(new Error(`embedding client: push got ${grads.length} gradient values for ${n} ids of dim ${dim}`));
  const sums = scratch.take(...rf.shardIds.map((_, s): ['f32', number] => ['f32', rf.shardCount(s) * dim])) as Float32Array[];
  for (const x of sums) x.fill(0);
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
  return Promise.all(parts).then((replies) => {
    const r: PushResponse = { applied: 0, dropped: 0, step: 0 };
    for (const x of replies) { r.applied += x.applied; r.dropped += x.dropped; r.step = Math.max(r.step, x.step); }
    return r;
  });
}
