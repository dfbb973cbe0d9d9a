// 64-bit feature ids, handled on the hot path as (hi, lo) uint32 pairs so that
// no BigInt is created per id. A BigUint64Array viewed as a Uint32Array holds
// exactly these pairs (lo at 2i, hi at 2i+1) on little-endian machines, which is
// also the wire order, so ids go from the caller to the socket without per-id work.
//
// Layout of an id: the top 8 bits are the feature group, the low 56 bits the
// id inside the group. The group lives in the id so that placement (which
// server holds a row) differs between groups that share raw ids.
import { endianness } from 'node:os';

if (endianness() !== 'LE') throw new Error('src/recsys/embedding-hash.ts: the embedding server assumes a little-endian machine');

export const GROUP_BITS = 8;
export const MAX_GROUPS = 1 << GROUP_BITS;
export const RAW_ID_BITS = 64 - GROUP_BITS;
/** Mask of the hi word's raw-id bits (the group occupies the top 8 bits of hi). */
export const HI_RAW_MASK = 0x00ffffff;
const TWO32 = 4294967296;

/** Hi word of the last `fmix64` result; the lo word is the return value (no pair allocated per call). */
export const mixOut = { hi: 0 };

/**
 * MurmurHash3's 64-bit finalizer on (hi, lo), done in 32-bit pieces. The high
 * half of each 32x32 product comes from the float product corrected by the exact
 * low half: the float error (< 2^12) is far below 2^31, so the rounding is exact.
 */
export function fmix64(hi: number, lo: number): number {
  lo = (lo ^ (hi >>> 1)) >>> 0;
  let L = Math.imul(lo, 0xed558ccd) >>> 0;
  let H = (Math.round((lo * 0xed558ccd - L) / TWO32) + Math.imul(lo, 0xff51afd7) + Math.imul(hi, 0xed558ccd)) >>> 0;
  lo = (L ^ (H >>> 1)) >>> 0;
  hi = H;
  L = Math.imul(lo, 0x1a85ec53) >>> 0;
  H = (Math.round((lo * 0x1a85ec53 - L) / TWO32) + Math.imul(lo, 0xc4ceb9fe) + Math.imul(hi, 0x1a85ec53)) >>> 0;
  mixOut.hi = H;
  return (L ^ (H >>> 1)) >>> 0;
}

/** Which of `numShards` servers holds id (hi, lo): the hash's hi word mod n (the lo word indexes hash tables). */
export function shardOf(hi: number, lo: number, numShards: number): number {
  fmix64(hi, lo);
  return mixOut.hi % numShards;
}

/** Full 64-bit id of raw id `raw` in `group`, as a bigint (API edge only). */
export function makeFeatureId(group: number, raw: bigint): bigint {
  return (BigInt(group) << BigInt(RAW_ID_BITS)) | (raw & ((1n << BigInt(RAW_ID_BITS)) - 1n));
}

export function groupOfId(id: bigint): number {
  return Number(id >> BigInt(RAW_ID_BITS));
}

export type IdInput = BigUint64Array | BigInt64Array | readonly bigint[] | readonly number[] | Float64Array;

/**
 * Ids of one group as (lo, hi) pairs with the group written into the top 8 bits.
 * A BigUint64Array is read through a Uint32Array view (no BigInt per id);
 * numbers must be non-negative safe integers (hashed Criteo ids usually are).
 */
export function idsToPairs(group: number, ids: IdInput, where = 'ids'): Uint32Array {
  const n = ids.length;
  const out = new Uint32Array(2 * n);
  const g = (group << 24) >>> 0;
  if (ids instanceof BigUint64Array || ids instanceof BigInt64Array) {
    const v = new Uint32Array(ids.buffer, ids.byteOffset, 2 * n);
    for (let i = 0; i < 2 * n; i += 2) {
      out[i] = v[i]!;
      out[i + 1] = ((v[i + 1]! & HI_RAW_MASK) | g) >>> 0;
    }
    return out;
  }
  for (let i = 0; i < n; i++) {
    const x = ids[i]!;
    if (typeof x === 'bigint') {
      if (x < 0n) throw new Error(`${where}[${i}]: negative id ${x}`);
      out[2 * i] = Number(x & 0xffffffffn);
      out[2 * i + 1] = ((Number((x >> 32n) & 0xffffffffn) & HI_RAW_MASK) | g) >>> 0;
    } else {
      if (!Number.isSafeInteger(x) || x < 0) throw new Error(`${where}[${i}]: id ${x} is not a non-negative safe integer (pass bigint for 64-bit ids)`);
      out[2 * i] = x >>> 0;
      out[2 * i + 1] = ((Math.floor(x / TWO32) & HI_RAW_MASK) | g) >>> 0;
    }
  }
  return out;
}

/** Pair (hi, lo) back to a bigint (tests, dumps, error messages). */
export function pairToBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Deterministic uniform value in [0, 1) from a 32-bit state (mulberry32 step); used for init and admission. */
export function u32ToUnit(x: number): number {
  return (x >>> 0) / TWO32;
}

/**
 * Deduplicates n (lo, hi) id pairs by open addressing in `table` (a power-of-two length
 * ≥ 2n, filled with -1). Distinct ids are numbered in order of first occurrence: inverse[i]
 * is id i's number u, uAt[u] its first occurrence, uShard[u] its server (from the same hash)
 * and uPos[u] its position on that server (shardCount counts them). Returns the count.
 */
export function dedupPairs(pairs: Uint32Array, n: number, numShards: number, table: Int32Array,
  inverse: Int32Array, uShard: Int32Array, uPos: Int32Array, uAt: Int32Array, shardCount: Int32Array): number {
  const mask = table.length - 1;
  let nu = 0;
  for (let i = 0; i < n; i++) {
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
        inverse[i] = nu++;
        break;
      }
      const j = uAt[u]!;
      if (pairs[2 * j] === lo && pairs[2 * j + 1] === hi) { inverse[i] = u; break; }
      b = (b + 1) & mask;
    }
  }
  return nu;
}
