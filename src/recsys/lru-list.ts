// Intrusive doubly linked LRU list over slot numbers: the links live in the slots'
// metadata records (slot-meta.ts), so linking a row moves a few integers in lines the
// batch already reads, and allocates nothing. Head is the most recently linked slot,
// tail the least; -1 ends the list.
//
// Windowed relinking (what `touch` decides): moving a row to the head writes its two
// neighbours' records, two random cache lines per touched row, which cost a store about a
// fifth of its time. So a touch relinks a row only when at least `window` links happened
// since the row's own (its link sequence number, M_LINK, against the list's counter `seq`):
// a row among the `window` most recently linked keeps its place. With window 1 this is
// exact LRU (only the head itself is skipped, as a move would be a no-op). With a larger
// window the list is LRU up to that window: the tail (the next eviction) is a row not
// linked for at least count - window links, and every row touched since then has moved
// ahead of it. In a full table the tail's link is at least count - 1 links old, so any
// touch of it moves it: a row is evicted only if untouched since `window` links after its
// own. Links are the clock (not touches): in a steady state with few new rows, hot rows
// almost never move. native/sparse.c (touch_row) runs the same rule, bit for bit.
import { M_LINK64, M_NEXT, M_PREV, META_INTS, type SlotMeta } from './slot-meta.js';

export class LruList {
  /** [head, tail] in one typed array, so that the native batch kernels (native/sparse.c) move rows too. */
  readonly ends = new Int32Array([-1, -1]);
  /** [links so far]: the sequence number of the next link (shared with the native kernels). */
  readonly seq = new Float64Array(1);
  constructor(private readonly meta: SlotMeta) {}
  /** Most recently linked slot. */
  get head(): number { return this.ends[0]!; }
  set head(s: number) { this.ends[0] = s; }
  /** Least recently linked slot. */
  get tail(): number { return this.ends[1]!; }
  set tail(s: number) { this.ends[1] = s; }

  /** The next more recently linked slot (-1 at the head). */
  prevOf(s: number): number { return this.meta.i32[s * META_INTS + M_PREV]!; }

  /** Links a slot that is not in the list at the head. */
  pushHead(s: number): void {
    const m = this.meta.i32;
    m[s * META_INTS + M_PREV] = -1;
    m[s * META_INTS + M_NEXT] = this.head;
    if (this.head >= 0) m[this.head * META_INTS + M_PREV] = s;
    this.head = s;
    if (this.tail < 0) this.tail = s;
    this.meta.f64[s * (META_INTS / 2) + M_LINK64] = this.seq[0]!++;
  }

  /** Moves a listed slot to the head (a no-op for the head itself). */
  moveToHead(s: number): void {
    if (this.head === s) return;
    this.unlink(s);
    this.pushHead(s);
  }

  /** moveToHead unless s is among the `window` most recently linked slots (see the file comment). */
  touch(s: number, window: number): void {
    if (this.seq[0]! - this.meta.f64[s * (META_INTS / 2) + M_LINK64]! >= window) this.moveToHead(s);
  }

  /** Takes a listed slot out of the list. */
  unlink(s: number): void {
    const m = this.meta.i32;
    const p = m[s * META_INTS + M_PREV]!, n = m[s * META_INTS + M_NEXT]!;
    if (p >= 0) m[p * META_INTS + M_NEXT] = n; else if (this.head === s) this.head = n;
    if (n >= 0) m[n * META_INTS + M_PREV] = p; else if (this.tail === s) this.tail = p;
    m[s * META_INTS + M_PREV] = -1; m[s * META_INTS + M_NEXT] = -1;
  }

  /**
   * Relinks every listed slot in the order of key(s) (stable: list order breaks ties),
   * oldest first. Used when the exact order by last touch is needed again after windowed
   * relinking (expiry switched on; see GroupTable.setPolicy).
   */
  sortBy(key: (s: number) => number): void {
    const order: number[] = [];
    for (let s = this.tail; s >= 0; s = this.prevOf(s)) order.push(s);
    const keys = order.map(key);
    const idx = order.map((_, i) => i).sort((a, b) => keys[a]! - keys[b]! || a - b);
    this.head = -1; this.tail = -1;
    for (const i of idx) this.pushHead(order[i]!);
  }
}
