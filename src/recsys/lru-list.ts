// Intrusive doubly linked LRU list over slot numbers: the links live in the slots'
// metadata records (slot-meta.ts), so touching a row moves a few integers in lines the
// batch already reads, and allocates nothing. Head is the most recently touched slot,
// tail the least; -1 ends the list.
import { M_NEXT, M_PREV, META_INTS, type SlotMeta } from './slot-meta.js';

export class LruList {
  /** [head, tail] in one typed array, so that the native batch kernels (native/sparse.c) move rows too. */
  readonly ends = new Int32Array([-1, -1]);
  constructor(private readonly meta: SlotMeta) {}
  /** Most recently touched slot. */
  get head(): number { return this.ends[0]!; }
  set head(s: number) { this.ends[0] = s; }
  /** Least recently touched slot. */
  get tail(): number { return this.ends[1]!; }
  set tail(s: number) { this.ends[1] = s; }

  /** The next more recently touched slot (-1 at the head). */
  prevOf(s: number): number { return this.meta.i32[s * META_INTS + M_PREV]!; }

  /** Links a slot that is not in the list at the head. */
  pushHead(s: number): void {
    const m = this.meta.i32;
    m[s * META_INTS + M_PREV] = -1;
    m[s * META_INTS + M_NEXT] = this.head;
    if (this.head >= 0) m[this.head * META_INTS + M_PREV] = s;
    this.head = s;
    if (this.tail < 0) this.tail = s;
  }

  /** Moves a listed slot to the head. */
  moveToHead(s: number): void {
    if (this.head === s) return;
    this.unlink(s);
    this.pushHead(s);
  }

  /** Takes a listed slot out of the list. */
  unlink(s: number): void {
    const m = this.meta.i32;
    const p = m[s * META_INTS + M_PREV]!, n = m[s * META_INTS + M_NEXT]!;
    if (p >= 0) m[p * META_INTS + M_NEXT] = n; else if (this.head === s) this.head = n;
    if (n >= 0) m[n * META_INTS + M_PREV] = p; else if (this.tail === s) this.tail = p;
    m[s * META_INTS + M_PREV] = -1; m[s * META_INTS + M_NEXT] = -1;
  }
}
