// Intrusive doubly linked LRU list over slot numbers: prev/next live in typed
// arrays indexed by slot, so touching a row moves two integers and allocates
// nothing. Head is the most recently touched slot, tail the least; -1 ends the list.

import { storeArray } from './native-sparse.js';

export class LruList {
  prev = new Int32Array(0);
  next = new Int32Array(0);
  /** [head, tail] in one typed array, so that the native batch kernels (native/sparse.c) move rows too. */
  readonly ends = new Int32Array([-1, -1]);
  /** Most recently touched slot. */
  get head(): number { return this.ends[0]!; }
  set head(s: number) { this.ends[0] = s; }
  /** Least recently touched slot. */
  get tail(): number { return this.ends[1]!; }
  set tail(s: number) { this.ends[1] = s; }

  /** Links a slot that is not in the list at the head. */
  pushHead(s: number): void {
    this.prev[s] = -1;
    this.next[s] = this.head;
    if (this.head >= 0) this.prev[this.head] = s;
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
    const p = this.prev[s]!, n = this.next[s]!;
    if (p >= 0) this.next[p] = n; else if (this.head === s) this.head = n;
    if (n >= 0) this.prev[n] = p; else if (this.tail === s) this.tail = p;
    this.prev[s] = -1; this.next[s] = -1;
  }

  /** Grows the per-slot arrays to `cap` slots, keeping their contents. */
  growSlots(cap: number): void {
    const prev = storeArray(Int32Array, cap), next = storeArray(Int32Array, cap);
    prev.set(this.prev);
    next.set(this.next);
    this.prev = prev;
    this.next = next;
  }
}
