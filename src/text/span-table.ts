// Open-addressing hash table keyed by a span of a string (text[s..e)), so hot
// loops can look words up without slicing them into new strings: a Map keyed
// by fresh substrings spent most of encoding time hashing, allocating and
// collecting them. Keys are copied into one Uint16Array pool on insert.

export class SpanTable {
  /** Slot -> entry index + 1 (0 = empty). */
  private slots: Int32Array;
  private mask: number;
  private hashes: Int32Array;
  private starts: Int32Array;
  private lens: Int32Array;
  private pool: Uint16Array;
  private poolUsed = 0;
  size = 0;

  constructor(initialSlots = 1 << 12) {
    const n = 1 << Math.ceil(Math.log2(Math.max(16, initialSlots)));
    this.slots = new Int32Array(n);
    this.mask = n - 1;
    this.hashes = new Int32Array(n >> 1);
    this.starts = new Int32Array(n >> 1);
    this.lens = new Int32Array(n >> 1);
    this.pool = new Uint16Array(n * 4);
  }

  /** Hash of text[s..e); pass it to find/insert. */
  static hash(t: string, s: number, e: number): number {
    let h = 0x811c9dc5 | 0;
    for (let i = s; i < e; i++) h = Math.imul(h ^ t.charCodeAt(i), 0x01000193);
    return h ^ (h >>> 15);
  }

  /** Entry index (0..size-1, in insertion order) of text[s..e), or -1. */
  find(t: string, s: number, e: number, h: number): number {
    const len = e - s;
    const { slots, mask, hashes, lens, starts, pool } = this;
    for (let p = h & mask; ; p = (p + 1) & mask) {
      const k = slots[p]! - 1;
      if (k < 0) return -1;
      if (hashes[k] === h && lens[k] === len) {
        const off = starts[k]!;
        let i = 0;
        while (i < len && pool[off + i] === t.charCodeAt(s + i)) i++;
        if (i === len) return k;
      }
    }
  }

  /** Adds text[s..e) (must not be present) and returns its entry index. */
  insert(t: string, s: number, e: number, h: number): number {
    if ((this.size + 1) * 2 > this.slots.length) this.rehash();
    const len = e - s;
    if (this.poolUsed + len > this.pool.length) {
      const bigger = new Uint16Array(Math.max(this.pool.length * 2, this.poolUsed + len));
      bigger.set(this.pool.subarray(0, this.poolUsed));
      this.pool = bigger;
    }
    for (let i = 0; i < len; i++) this.pool[this.poolUsed + i] = t.charCodeAt(s + i);
    const k = this.size++;
    this.hashes[k] = h;
    this.starts[k] = this.poolUsed;
    this.lens[k] = len;
    this.poolUsed += len;
    const { slots, mask } = this;
    let p = h & mask;
    while (slots[p] !== 0) p = (p + 1) & mask;
    slots[p] = k + 1;
    return k;
  }

  /** Key of entry k as a string. */
  key(k: number): string {
    const off = this.starts[k]!;
    const len = this.lens[k]!;
    let s = '';
    // Chunked so very long keys do not overflow the argument limit.
    for (let i = 0; i < len; i += 8192) {
      s += String.fromCharCode.apply(null, this.pool.subarray(off + i, off + Math.min(len, i + 8192)) as unknown as number[]);
    }
    return s;
  }

  /** Characters held in the key pool (for cache size limits). */
  get pooledChars(): number {
    return this.poolUsed;
  }

  clear(): void {
    this.slots.fill(0);
    this.size = 0;
    this.poolUsed = 0;
  }

  private rehash(): void {
    const n = this.slots.length * 2;
    const grow = (a: Int32Array): Int32Array => {
      const b = new Int32Array(n >> 1);
      b.set(a);
      return b;
    };
    this.hashes = grow(this.hashes);
    this.starts = grow(this.starts);
    this.lens = grow(this.lens);
    this.slots = new Int32Array(n);
    this.mask = n - 1;
    for (let k = 0; k < this.size; k++) {
      let p = this.hashes[k]! & this.mask;
      while (this.slots[p] !== 0) p = (p + 1) & this.mask;
      this.slots[p] = k + 1;
    }
  }
}
