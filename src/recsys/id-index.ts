// Open-addressing (linear probing) index from a 64-bit id, held as a (hi, lo)
// uint32 pair, to the slot that stores its row. Slots are small integers owned by
// the caller; each slot's id and hash live in its metadata record (slot-meta.ts), so
// millions of ids allocate nothing per id and a probe that hits reads one record line.
// The caller keeps the table at most half full (see GroupTable.insertNew), which keeps
// probes short.
import { fmix64 } from './embedding-hash.js';
import { storeArray, type NativeSparse } from './native-sparse.js';
import { M_HASH, M_HI, M_LO, META_INTS, type SlotMeta } from './slot-meta.js';

export class IdIndex {
  /** Slot per bucket, -1 when empty. Read and written by the native insert (GroupTable.gatherNative) too. */
  table = new Int32Array(0);
  mask = 0;
  constructor(private readonly meta: SlotMeta) {}

  /** Number of buckets. */
  get size(): number { return this.table.length; }
  get tableBytes(): number { return this.table.byteLength; }

  idLoOf(s: number): number { return this.meta.u32[s * META_INTS + M_LO]!; }
  idHiOf(s: number): number { return this.meta.u32[s * META_INTS + M_HI]!; }

  /**
   * Slot of id (hi, lo), or -1. Leaves fmix64(hi, lo)'s hi word in `mixOut`: callers
   * read it for the shard-placement check without hashing the id a second time.
   */
  find(hi: number, lo: number): number {
    const h = fmix64(hi, lo);
    const table = this.table, mask = this.mask, m = this.meta.u32;
    let i = h & mask;
    for (;;) {
      const s = table[i]!;
      if (s < 0) return -1;
      if (m[s * META_INTS + M_LO] === lo && m[s * META_INTS + M_HI] === hi) return s;
      i = (i + 1) & mask;
    }
  }

  /**
   * `find` for n (lo, hi) pairs at once in C: slots[i] = slot or -1 and hashHi[i] = mixOut.hi
   * of find. Valid until the index next changes (see GroupTable.slotAt).
   */
  findBatch(nat: NativeSparse, ids: Uint32Array, n: number, slots: Int32Array, hashHi: Uint32Array): void {
    nat.find(n, ids, this.table, this.mask, this.meta.i32, slots, hashHi);
  }

  /** Records id (hi, lo) for slot s and adds it to the table; the id must be absent and a bucket free. */
  insert(s: number, hi: number, lo: number): void {
    const h = fmix64(hi, lo), m = this.meta.u32;
    m[s * META_INTS + M_LO] = lo;
    m[s * META_INTS + M_HI] = hi;
    m[s * META_INTS + M_HASH] = h;
    let i = h & this.mask;
    while (this.table[i]! >= 0) i = (i + 1) & this.mask;
    this.table[i] = s;
  }

  /** Removes slot s from the table (backward-shift deletion: no tombstones, so probes stay short). */
  remove(s: number): void {
    const table = this.table, mask = this.mask, m = this.meta.u32;
    let i = m[s * META_INTS + M_HASH]! & mask;
    while (table[i] !== s) i = (i + 1) & mask;
    let j = i;
    for (;;) {
      table[i] = -1;
      for (;;) {
        j = (j + 1) & mask;
        const t = table[j]!;
        if (t < 0) return;
        const home = m[t * META_INTS + M_HASH]! & mask;
        const stays = i <= j ? i < home && home <= j : i < home || home <= j;
        if (!stays) break;
      }
      table[i] = table[j]!;
      i = j;
    }
  }

  /**
   * Empties the table and resizes it to `size` buckets (a power of two). The caller
   * then re-adds every live slot with `place`: only it knows which slots are live.
   */
  reset(size: number): void {
    this.table = storeArray(Int32Array, size).fill(-1);
    this.mask = size - 1;
  }

  /** Re-adds slot s, whose id is already recorded, after `reset`. */
  place(s: number): void {
    let i = this.meta.u32[s * META_INTS + M_HASH]! & this.mask;
    while (this.table[i]! >= 0) i = (i + 1) & this.mask;
    this.table[i] = s;
  }
}
