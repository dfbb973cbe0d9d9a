// Per-slot metadata of a GroupTable: one 64-byte record per slot, i.e. one cache line,
// holding everything a batch reads or writes about a row besides its values: the id, its
// hash, the LRU links and link number, the optimizer step, the push marks, the last touch and
// the stamp of the last call that touched it. Slots are
// random, so with one array per field every field cost its own cache miss (about 24 random
// lines per row looked up and pushed); with records the index probe, the touch and the mark
// share one line. native/sparse.c reads the same layout (M_* there).
import { storeArray } from './native-sparse.js';

/** int32 words per record (64 bytes). */
export const META_INTS = 16;
export const M_LO = 0;      // id lo word (uint32)
export const M_HI = 1;      // id hi word (uint32)
export const M_HASH = 2;    // lo word of the id's hash: its home bucket (uint32)
export const M_PREV = 3;    // LRU: the next more recently touched slot, -1 at the head (lru-list.ts)
export const M_NEXT = 4;    // LRU: the next less recently touched slot, -1 at the tail
export const M_STEP = 5;    // optimizer step of the row (Adam bias correction)
export const M_MARK = 6;    // push batch stamp: the row already has a gradient sum in this batch
export const M_MPOS = 7;    // ... at this position
/** lastTouch (server step of the last lookup or push) is the float64 at word 8 (bytes 32..39). */
export const M_TOUCH64 = 4;
export const M_USE = 10;    // stamp of the last lookup or push call that touched the row (GroupTable.useStamp)
/** The LRU link sequence number (lru-list.ts: when the row was last moved to the head) is the float64 at word 12. */
export const M_LINK64 = 6;
export const META_BYTES = 4 * META_INTS;

export class SlotMeta {
  i32 = new Int32Array(0);
  u32 = new Uint32Array(0);
  f64 = new Float64Array(0);
  cap = 0;

  /** Grows to `cap` records, keeping their contents (views are replaced: re-read them after). */
  grow(cap: number): void {
    const b = storeArray(Int32Array, cap * META_INTS);
    b.set(this.i32);
    this.i32 = b;
    this.u32 = new Uint32Array(b.buffer, b.byteOffset, b.length);
    this.f64 = new Float64Array(b.buffer, b.byteOffset, b.length / 2);
    this.cap = cap;
  }

  lastTouch(s: number): number { return this.f64[s * (META_INTS / 2) + M_TOUCH64]!; }
  setLastTouch(s: number, step: number): void { this.f64[s * (META_INTS / 2) + M_TOUCH64] = step; }
}
