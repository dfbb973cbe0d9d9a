// One feature group's rows on one server: float32 row slabs and optimizer-state
// slabs (chunks of CHUNK_ROWS rows, allocated as the group fills), per-slot
// metadata in one 64-byte record per slot (slot-meta.ts), an open-addressing id -> slot
// index (id-index.ts), and an intrusive LRU list (lru-list.ts) through the records. No JS
// object exists per row, so millions of rows cost the GC nothing.
//
// Row lifecycle:
// - A row is created on first sight with a value drawn from (seed, id) only, so it
//   does not depend on arrival order or on which server holds it.
// - Admission: an unseen id is stored only if hash(seed, id, step) < admitProbability.
//   The decision is deterministic for a given server step and redrawn on later
//   steps, so a frequent id gets in after about 1/p steps. A refused id is answered
//   with its init vector (exactly what the row would hold), and its gradient is
//   dropped unless the push itself admits it.
// - At capacity the row at the LRU tail is evicted. The list is relinked in windows
//   (lru-list.ts): a touch moves a row to the head only if at least capacity/8 links
//   happened since its own, which saves the two neighbour records a move writes for the
//   hot rows that dominate a skewed workload. So the victim is the least recently touched
//   row up to that window: it has not been touched since capacity/8 links after its own
//   link, and every row touched after that point is ahead of it in the list. A row touched in the current lookup or
//   push call (the M_USE stamp) is never the victim while the call has at most capacity ids:
//   it is moved to the head instead. An evicted row is gone: a later lookup answers its
//   init vector, a checkpoint taken after does not hold it, a pending gradient for it in the
//   same push is dropped (counted), exactly as with exact LRU.
// - With expireSteps > 0, rows untouched for more than that many steps are dropped. The
//   window is then 1 (exact LRU: list order equals last-touch order), so the sweep only
//   looks at the list tail; switching expiry on re-sorts the list by last touch.
//
// This file is the residency half of a group's table: where rows live, which are kept and
// when they go. The batch operations on them (lookup, push, natively or in the TypeScript
// loops) are GroupTable's (embedding-store.ts), which extends this class: both halves work
// on the same slabs, records and stamps, and the native kernels take those arrays raw.
import { fmix64, mixOut, u32ToUnit } from './embedding-hash.js';
import type { GroupConfig } from './embedding-config.js';
import { IdIndex } from './id-index.js';
import { LruList } from './lru-list.js';
import { M_HI, M_MARK, M_MPOS, M_STEP, M_USE, META_BYTES, META_INTS, SlotMeta } from './slot-meta.js';
import { initState, stateWidth, type SparseOptimizerConfig } from './sparse-optimizer.js';
import { nativeSparse, storeArray, type NativeSparse } from './native-sparse.js';

export const CHUNK_SHIFT = 14;
export const CHUNK_ROWS = 1 << CHUNK_SHIFT;
export const CHUNK_MASK = CHUNK_ROWS - 1;
/** Bytes of per-slot metadata: one record (slot-meta.ts) of id, hash, LRU links, step, marks and last touch. */
export const META_BYTES_PER_ROW = META_BYTES;

export interface GroupCounters {
  hits: number; misses: number; inserts: number; evictions: number; expired: number;
  notAdmitted: number; droppedGrads: number; updates: number;
}

/** Rows of a group in LRU order (oldest first), as dumped to and loaded from checkpoints. */
export interface RowBlock {
  count: number;
  ids: Uint32Array;        // (lo, hi) pairs
  rows: Float32Array;      // count * dim
  state: Float32Array;     // count * stateWidth
  rowStep: Int32Array;     // per-row optimizer step (Adam bias correction)
  lastTouch: Float64Array; // server step of the last lookup or push
}

export class GroupSlots {
  readonly dim: number;
  readonly capacity: number;
  cfg: GroupConfig;
  stW: number;
  count = 0;
  /** Placement this table serves: ids whose hash maps elsewhere are refused (a misrouting client would break re-sharding). */
  shardIndex = 0;
  numShards = 1;
  readonly counters: GroupCounters = { hits: 0, misses: 0, inserts: 0, evictions: 0, expired: 0, notAdmitted: 0, droppedGrads: 0, updates: 0 };

  protected rowChunks: Float32Array[] = [];
  protected rowChunksU: Uint32Array[] = []; // the same slabs as bits, for bfloat16 encoding
  protected stateChunks: Float32Array[] = [];
  protected metaCap = 0;
  protected readonly meta = new SlotMeta();
  protected readonly ids = new IdIndex(this.meta);
  protected readonly lru = new LruList(this.meta);
  private free = new Int32Array(0);
  protected freeTop = 0;
  protected nextSlot = 0;
  /** Stamp of the current push (M_MARK of the rows it has a gradient sum for, at M_MPOS in uniqSlot). */
  protected stamp = 1;
  /** Stamp of the current lookup or push call (M_USE of the rows it touched), and whether it protects them from eviction (at most capacity ids). */
  protected useStamp = 1;
  private protectUse = false;
  protected uniqSlot = new Int32Array(0);
  // Native batch path (native-sparse.ts): chunk address tables of the slabs.
  protected readonly nat: NativeSparse | null;
  protected rowTab = new BigUint64Array(0);
  protected stateTab = new BigUint64Array(0);
  /** Bumped whenever the id index changes: batch-found slots are rechecked after that. */
  protected mutations = 0;
  protected readonly initHi: number;
  protected readonly initLo: number;
  private readonly admitHi: number;
  private readonly admitLo: number;

  /** `native: false` forces the TypeScript loops (the reference the kernel tests compare against). */
  constructor(cfg: GroupConfig, seed: number, opts: { native?: boolean } = {}) {
    this.nat = opts.native === false ? null : nativeSparse();
    this.cfg = cfg;
    this.dim = cfg.dim;
    this.capacity = cfg.capacity;
    this.stW = stateWidth(cfg.optimizer, cfg.dim);
    this.initLo = fmix64(0x243f6a88, seed >>> 0);
    this.initHi = mixOut.hi;
    this.admitLo = fmix64(0x85a308d3, seed >>> 0);
    this.admitHi = mixOut.hi;
    this.rehash(1024);
  }

  /** Writes the seeded initial value of id (hi, lo) into out[off .. off+dim). */
  initRow(hi: number, lo: number, out: Float32Array, off: number): void {
    const init = this.cfg.init;
    const dim = this.dim;
    if (init.kind === 'zeros') { out.fill(0, off, off + dim); return; }
    const scale = init.scale;
    let x = (fmix64(hi ^ this.initHi, lo ^ this.initLo) ^ mixOut.hi) | 0;
    for (let j = 0; j < dim; j++) {
      // mulberry32: a cheap, well-mixed 32-bit stream per row.
      x = (x + 0x6d2b79f5) | 0;
      let t = Math.imul(x ^ (x >>> 15), 1 | x);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      out[off + j] = (2 * u32ToUnit(t ^ (t >>> 14)) - 1) * scale;
    }
  }

  /** Whether an unseen id is stored at server step `step` (deterministic in (seed, id, step)). */
  admits(hi: number, lo: number, step: number): boolean {
    const p = this.cfg.admitProbability;
    if (p >= 1) return true;
    if (p <= 0) return false;
    const sLo = fmix64(Math.floor(step / 4294967296), step >>> 0);
    const sHi = mixOut.hi;
    fmix64(hi ^ this.admitHi ^ sHi, lo ^ this.admitLo ^ sLo);
    return u32ToUnit(mixOut.hi) < p;
  }

  /** Slot of id (hi, lo), or -1. Leaves the id's hash hi word in mixOut (the shard check reads it). */
  find(hi: number, lo: number): number { return this.ids.find(hi, lo); }

  rowsOf(slot: number): Float32Array { return this.rowChunks[slot >>> CHUNK_SHIFT]!; }
  rowOffset(slot: number): number { return (slot & CHUNK_MASK) * this.dim; }

  /** Drops rows untouched for more than expireSteps steps (they sit at the LRU tail). */
  sweepExpired(step: number): number {
    const e = this.cfg.expireSteps;
    if (e <= 0) return 0;
    let k = 0;
    while (this.lru.tail >= 0 && step - this.meta.lastTouch(this.lru.tail) > e) {
      const s = this.lru.tail;
      this.removeSlot(s);
      this.free[this.freeTop++] = s;
      k++;
    }
    this.counters.expired += k;
    return k;
  }

  /** Ids from least to most recently used (tests, debugging). */
  lruOrder(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let s = this.lru.tail; s >= 0; s = this.lru.prevOf(s)) out.push([this.ids.idHiOf(s), this.ids.idLoOf(s)]);
    return out;
  }

  /**
   * Changes hyperparameters; a different optimizer kind resets every row's state
   * (the old state means nothing to the new optimizer).
   */
  setOptimizer(opt: SparseOptimizerConfig): void {
    const kindChanged = opt.kind !== this.cfg.optimizer.kind;
    this.cfg = { ...this.cfg, optimizer: opt };
    if (!kindChanged) return;
    this.stW = stateWidth(opt, this.dim);
    this.stateChunks = this.rowChunks.map(() => new Float32Array(CHUNK_ROWS * this.stW));
    if (this.nat) {
      this.stateTab = new BigUint64Array(this.rowTab.length);
      if (this.stW) this.stateChunks.forEach((c, k) => this.nat!.setPtr(this.stateTab, k, c));
    }
    for (let s = this.lru.tail; s >= 0; s = this.lru.prevOf(s)) {
      initState(opt, this.stateChunks[s >>> CHUNK_SHIFT]!, (s & CHUNK_MASK) * this.stW, this.dim);
      this.meta.i32[s * META_INTS + M_STEP] = 0;
    }
  }

  setPolicy(p: { admitProbability?: number; expireSteps?: number }): void {
    const wasExact = this.cfg.expireSteps > 0;
    this.cfg = { ...this.cfg, ...p };
    // Expiry reads the list tail, which needs exact last-touch order: undo the window's slack.
    if (!wasExact && this.cfg.expireSteps > 0) this.lru.sortBy((s) => this.meta.lastTouch(s));
  }

  /** Copies every resident row, oldest first. */
  exportRows(): RowBlock {
    const n = this.count, dim = this.dim, stW = this.stW;
    const b: RowBlock = {
      count: n, ids: new Uint32Array(2 * n), rows: new Float32Array(n * dim), state: new Float32Array(n * stW),
      rowStep: new Int32Array(n), lastTouch: new Float64Array(n),
    };
    // List order: LRU up to the relink window. loadShard orders by last touch (exact).
    let i = 0;
    for (let s = this.lru.tail; s >= 0; s = this.lru.prevOf(s)) {
      b.ids[2 * i] = this.ids.idLoOf(s);
      b.ids[2 * i + 1] = this.ids.idHiOf(s);
      const k = s >>> CHUNK_SHIFT, r = s & CHUNK_MASK;
      b.rows.set(this.rowChunks[k]!.subarray(r * dim, (r + 1) * dim), i * dim);
      if (stW) b.state.set(this.stateChunks[k]!.subarray(r * stW, (r + 1) * stW), i * stW);
      b.rowStep[i] = this.meta.i32[s * META_INTS + M_STEP]!;
      b.lastTouch[i] = this.meta.lastTouch(s);
      i++;
    }
    return b;
  }

  /** Inserts (or overwrites) row `i` of a block; inserting in oldest-first order rebuilds the LRU list. */
  importRow(b: RowBlock, i: number, blockStateWidth: number): void {
    const lo = b.ids[2 * i]!, hi = b.ids[2 * i + 1]!;
    let s = this.find(hi, lo);
    this.protectUse = false; // no call is running: the stamps of the last one protect nothing
    if (s < 0) s = this.insertNew(hi, lo);
    const dim = this.dim, stW = this.stW;
    const k = s >>> CHUNK_SHIFT, r = s & CHUNK_MASK;
    this.rowChunks[k]!.set(b.rows.subarray(i * dim, (i + 1) * dim), r * dim);
    if (stW) {
      if (blockStateWidth !== stW) throw new Error(`group ${this.cfg.id}: checkpoint state width ${blockStateWidth} != ${stW}`);
      this.stateChunks[k]!.set(b.state.subarray(i * stW, (i + 1) * stW), r * stW);
    }
    this.meta.i32[s * META_INTS + M_STEP] = b.rowStep[i]!;
    this.meta.setLastTouch(s, b.lastTouch[i]!);
    this.lru.moveToHead(s); // always: rows come oldest first
  }

  // ---- internals -------------------------------------------------------------

  protected misrouted(hi: number, lo: number): never {
    const id = ((BigInt(hi) << 32n) | BigInt(lo)).toString(16);
    throw new Error(`group ${this.cfg.id}: id 0x${id} does not belong to shard ${this.shardIndex} of ${this.numShards} (or to this group)`);
  }

  protected insertNew(hi: number, lo: number): number {
    this.mutations++;
    let s: number;
    if (this.freeTop > 0) s = this.free[--this.freeTop]!;
    else if (this.nextSlot < this.capacity) { s = this.nextSlot++; this.ensureSlot(s); }
    else {
      s = this.lru.tail;
      // A row this call already touched stays (see GroupTable.gatherNative); with at most capacity ids
      // some row was not touched, so this ends.
      if (this.protectUse) {
        const m = this.meta.i32;
        while (m[s * META_INTS + M_USE] === this.useStamp) { this.lru.moveToHead(s); s = this.lru.tail; }
      }
      this.removeSlot(s);
      this.counters.evictions++;
    }
    if ((this.count + 1) * 2 > this.ids.size) this.rehash(this.ids.size * 2);
    this.ids.insert(s, hi, lo);
    this.count++;
    this.counters.inserts++;
    const k = s >>> CHUNK_SHIFT, r = s & CHUNK_MASK;
    this.initRow(hi, lo, this.rowChunks[k]!, r * this.dim);
    initState(this.cfg.optimizer, this.stateChunks[k]!, r * this.stW, this.dim);
    this.meta.i32[s * META_INTS + M_STEP] = 0;
    this.lru.pushHead(s);
    return s;
  }

  /** Takes a slot out of the index and the LRU list. */
  private removeSlot(s: number): void {
    this.mutations++;
    this.ids.remove(s);
    this.lru.unlink(s);
    this.count--;
    const m = this.meta.i32, r = s * META_INTS;
    // A slot found before this (prefind, recall) is trusted when its record still names the
    // id: a freed slot's record must name none of this group's ids (another group byte).
    m[r + M_HI] = ((this.cfg.id + 1) & 0xff) << 24;
    // A row evicted while its gradient is pending in the current push loses that gradient.
    if (m[r + M_MARK] === this.stamp) { this.uniqSlot[m[r + M_MPOS]!] = -1; m[r + M_MARK] = 0; }
  }

  protected touch(s: number, step: number): void {
    this.meta.setLastTouch(s, step);
    this.meta.i32[s * META_INTS + M_USE] = this.useStamp;
    this.lru.touch(s, this.lruWindow());
  }

  /** Links between a row's moves to the LRU head (lru-list.ts): 1 (exact LRU) under expiry, else an eighth of the capacity. */
  protected lruWindow(): number {
    return this.cfg.expireSteps > 0 ? 1 : Math.max(1, this.capacity >> 3);
  }

  /** A new lookup or push call of n ids: a new M_USE stamp (rows it touches are not evicted by it while n <= capacity). */
  protected beginCall(n: number): void {
    if (++this.useStamp >= 0x7fffffff) {
      for (let s = 0; s < this.meta.cap; s++) this.meta.i32[s * META_INTS + M_USE] = 0;
      this.useStamp = 1;
    }
    this.protectUse = n <= this.capacity;
  }

  private ensureSlot(s: number): void {
    if (s >= this.metaCap) {
      const cap = Math.min(this.capacity, Math.max(1024, this.metaCap * 2, s + 1));
      this.meta.grow(cap);
      const free = new Int32Array(cap);
      free.set(this.free);
      this.free = free;
      this.metaCap = cap;
    }
    const k = s >>> CHUNK_SHIFT;
    while (this.rowChunks.length <= k) {
      const rows = storeArray(Float32Array, CHUNK_ROWS * this.dim);
      this.rowChunks.push(rows);
      this.rowChunksU.push(new Uint32Array(rows.buffer, rows.byteOffset, rows.length));
      this.stateChunks.push(storeArray(Float32Array, CHUNK_ROWS * this.stW));
      if (this.nat) {
        // The chunk tables hold raw addresses: these slabs stay referenced by rowChunks/stateChunks.
        if (this.rowTab.length <= k) {
          const grow = (a: BigUint64Array<ArrayBuffer>): BigUint64Array<ArrayBuffer> => { const b = new BigUint64Array(Math.max(8, 2 * a.length, this.rowChunks.length)); b.set(a); return b; };
          this.rowTab = grow(this.rowTab);
          this.stateTab = grow(this.stateTab);
        }
        const j = this.rowChunks.length - 1;
        this.nat.setPtr(this.rowTab, j, rows);
        if (this.stW) this.nat.setPtr(this.stateTab, j, this.stateChunks[j]!);
      }
    }
  }

  /** Resizes the index, re-adding the live slots in LRU order (oldest first). */
  private rehash(size: number): void {
    this.ids.reset(size);
    for (let s = this.lru.tail; s >= 0; s = this.lru.prevOf(s)) this.ids.place(s);
  }
}
