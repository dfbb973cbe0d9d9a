// The last few training lookups of a group table (GroupTable in embedding-store.ts), kept
// with the slots they resolved and their hash words: a trainer pushes the gradients of
// exactly the ids it looked up, in the same order, so that push can take its slots from
// here instead of probing the id index again. The slots are valid at the index mutation
// count recorded: a batch no larger than the capacity cannot evict its own rows, which are
// all touched; the table rechecks them against later changes as after a batch find.

/** Training lookups remembered for the pushes that follow them: several clients, each a few batches in flight. */
const RECENT_LOOKUPS = 8;

export interface RecentLookup {
  /** Ids in the entry; 0 once a push took it (a batch's gradients are pushed once). */
  n: number;
  ids: Uint32Array;    // (lo, hi) pairs
  slots: Int32Array;
  hashHi: Uint32Array;
  /** The table's index mutation count the slots are valid for. */
  mutations: number;
}

/** A small ring, one entry per recent batch; entries and their arrays are reused. */
export class RecentLookups {
  private readonly ring: RecentLookup[] = [];
  private next = 0;

  remember(ids: Uint32Array, n: number, slots: Int32Array, hashHi: Uint32Array, mutations: number): void {
    if (this.ring.length < RECENT_LOOKUPS) this.ring.push({ n: 0, ids: new Uint32Array(0), slots: new Int32Array(0), hashHi: new Uint32Array(0), mutations: 0 });
    const e = this.ring[this.next]!;
    this.next = (this.next + 1) % RECENT_LOOKUPS;
    if (e.slots.length < n) { e.ids = new Uint32Array(2 * n); e.slots = new Int32Array(n); e.hashHi = new Uint32Array(n); }
    e.ids.set(ids.subarray(0, 2 * n));
    e.slots.set(slots.subarray(0, n));
    e.hashHi.set(hashHi.subarray(0, n));
    e.n = n;
    e.mutations = mutations;
  }

  /** The entry of exactly these n ids, marked used (its slots stay readable until the next remember), or null. */
  take(ids: Uint32Array, n: number): RecentLookup | null {
    const want = Buffer.from(ids.buffer, ids.byteOffset, 8 * n);
    for (const e of this.ring) {
      if (e.n !== n || !want.equals(Buffer.from(e.ids.buffer, e.ids.byteOffset, 8 * n))) continue;
      e.n = 0; // used: a batch's gradients are pushed once
      return e;
    }
    return null;
  }

  /** Bytes of the entries' arrays. */
  bytes(): number {
    return this.ring.reduce((a, e) => a + e.ids.byteLength + e.slots.byteLength + e.hashHi.byteLength, 0);
  }
}
