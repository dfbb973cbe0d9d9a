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
// With the native library, a batch's id lookups, row gathers, gradient sums and
// optimizer updates are one C call each (native-sparse.ts, native/sparse.c), and so is
// the per-row bookkeeping of stored ids (shard check, LRU touch, hit counter, duplicate
// marks): those kernels stop at each id that needs this file (a miss: admission and
// insertion), which is handled here before the kernel resumes, so both paths apply the
// same operations in the same id order and leave bit-identical tables. Without the
// library the TypeScript loops below run; they are the kernels' test oracle.
import { f32ToF16 } from '../core/dtype.js';
import { fmix64, mixOut, u32ToUnit } from './embedding-hash.js';
import type { GroupConfig } from './embedding-config.js';
import { IdIndex } from './id-index.js';
import { LruList } from './lru-list.js';
import { M_HI, M_MARK, M_MPOS, M_STEP, M_USE, META_BYTES, META_INTS, SlotMeta } from './slot-meta.js';
import { applyRow, initState, stateWidth, type SparseOptimizerConfig } from './sparse-optimizer.js';
import { decodeHalf, encodeHalf, nativeSparse, storeArray, type NativeSparse } from './native-sparse.js';

const CHUNK_SHIFT = 14;
const CHUNK_ROWS = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_ROWS - 1;
/** Training lookups remembered for the pushes that follow them (GroupTable.remember): several clients, each a few batches in flight. */
const RECENT_LOOKUPS = 8;
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

export class GroupTable {
  readonly dim: number;
  readonly capacity: number;
  cfg: GroupConfig;
  stW: number;
  count = 0;
  /** Placement this table serves: ids whose hash maps elsewhere are refused (a misrouting client would break re-sharding). */
  shardIndex = 0;
  numShards = 1;
  readonly counters: GroupCounters = { hits: 0, misses: 0, inserts: 0, evictions: 0, expired: 0, notAdmitted: 0, droppedGrads: 0, updates: 0 };

  private rowChunks: Float32Array[] = [];
  private rowChunksU: Uint32Array[] = []; // the same slabs as bits, for bfloat16 encoding
  private rowTmp: Float32Array;
  private rowTmpU: Uint32Array;
  private stateChunks: Float32Array[] = [];
  private metaCap = 0;
  private readonly meta = new SlotMeta();
  private readonly ids = new IdIndex(this.meta);
  private readonly lru = new LruList(this.meta);
  private free = new Int32Array(0);
  private freeTop = 0;
  private nextSlot = 0;
  private stamp = 1;
  /** Stamp of the current lookup or push call (M_USE of the rows it touched), and whether it protects them from eviction (at most capacity ids). */
  private useStamp = 1;
  private protectUse = false;
  private uniqSlot = new Int32Array(0);
  private gradSum = new Float32Array(0);
  // Native batch path (native-sparse.ts): chunk address tables and reused per-batch scratch.
  private readonly nat: NativeSparse | null;
  private hitAcc = new Int32Array(2); // push kernel's [distinct rows so far, duplicates seen]
  private fillAcc = new Int32Array(5); // lookup kernel's [hits, inserts, read-only misses, nextSlot, count]
  private rowTab = new BigUint64Array(0);
  private stateTab = new BigUint64Array(0);
  private slotBuf = new Int32Array(0);
  private stage = new Float32Array(0);
  private uOf = new Int32Array(0);
  private firstRow = new Int32Array(0);
  private adamStep = new Float64Array(0);
  private adamBc2 = new Float64Array(0);
  private foundBuf = new Int32Array(0);
  private hashHiBuf = new Uint32Array(0);
  private wireGrads = new Float32Array(0);
  private recent: Array<{ n: number; ids: Uint32Array; slots: Int32Array; hashHi: Uint32Array; mutations: number }> = [];
  private recentNext = 0;
  /** Bumped whenever the id index changes: batch-found slots are rechecked after that. */
  private mutations = 0;
  private readonly initHi: number;
  private readonly initLo: number;
  private readonly admitHi: number;
  private readonly admitLo: number;

  /** `native: false` forces the TypeScript loops (the reference the kernel tests compare against). */
  constructor(cfg: GroupConfig, seed: number, opts: { native?: boolean } = {}) {
    this.nat = opts.native === false ? null : nativeSparse();
    this.cfg = cfg;
    this.dim = cfg.dim;
    this.capacity = cfg.capacity;
    this.stW = stateWidth(cfg.optimizer, cfg.dim);
    this.rowTmp = new Float32Array(cfg.dim);
    this.rowTmpU = new Uint32Array(this.rowTmp.buffer);
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

  /**
   * Rows of `n` ids (pairs) into out (n * dim). Training lookups create admitted
   * rows and touch them; read-only lookups (inference) change nothing.
   */
  lookup(ids: Uint32Array, n: number, out: Float32Array, step: number, readOnly: boolean): void {
    this.beginCall(n);
    if (this.gatherNative(ids, n, out, step, readOnly)) return;
    const dim = this.dim;
    for (let i = 0; i < n; i++) {
      const lo = ids[2 * i]!, hi = ids[2 * i + 1]!;
      const s = this.lookupSlot(hi, lo, step, readOnly);
      if (s < 0) { this.initRow(hi, lo, out, i * dim); continue; }
      const src = this.rowChunks[s >>> CHUNK_SHIFT]!;
      const o = (s & CHUNK_MASK) * dim;
      for (let j = 0; j < dim; j++) out[i * dim + j] = src[o + j]!;
    }
  }

  /**
   * Same as lookup, but encodes each row straight from its slab into `dst` (the
   * response frame) as float16/bfloat16, saving a float32 staging copy per row.
   */
  lookupWire(ids: Uint32Array, n: number, dtype: 'float32' | 'float16' | 'bfloat16', dst: Uint8Array, step: number, readOnly: boolean): void {
    const dim = this.dim;
    this.beginCall(n);
    if (dtype === 'float32') { this.lookup(ids, n, new Float32Array(dst.buffer, dst.byteOffset, n * dim), step, readOnly); return; }
    const out = new Uint16Array(dst.buffer, dst.byteOffset, n * dim);
    const bf = dtype === 'bfloat16';
    if (bf && this.gatherNative(ids, n, null, step, readOnly, out)) return;
    if (this.nat && n <= this.capacity) {
      if (this.stage.length < n * dim) this.stage = new Float32Array(n * dim);
      if (this.gatherNative(ids, n, this.stage, step, readOnly) && encodeHalf(bf, n * dim, this.stage, out)) return;
    }
    for (let i = 0; i < n; i++) {
      const lo = ids[2 * i]!, hi = ids[2 * i + 1]!;
      const s = this.lookupSlot(hi, lo, step, readOnly);
      let src: Float32Array, srcU: Uint32Array, o: number;
      if (s < 0) {
        this.initRow(hi, lo, this.rowTmp, 0);
        src = this.rowTmp; srcU = this.rowTmpU; o = 0;
      } else {
        const k = s >>> CHUNK_SHIFT;
        src = this.rowChunks[k]!; srcU = this.rowChunksU[k]!; o = (s & CHUNK_MASK) * dim;
      }
      const d = i * dim;
      if (bf) {
        for (let j = 0; j < dim; j++) {
          const x = srcU[o + j]!; // round to nearest even, quiet NaN (as f32ToBf16)
          out[d + j] = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 0x40) & 0xffff : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
        }
      } else {
        for (let j = 0; j < dim; j++) out[d + j] = f32ToF16(src[o + j]!);
      }
    }
  }

  /**
   * lookup() as one native gather: slots are resolved (and created/touched) in id
   * order first, then copied. Deferring the copy is exact while n <= capacity: a row
   * touched earlier in the call cannot then be evicted by a later one (insertNew moves
   * rows with this call's M_USE stamp off the tail instead). False (nothing done) without the native library or beyond that.
   * With `bf16` (and out null) the rows go straight into bfloat16, as lookupWire would encode them.
   */
  private gatherNative(ids: Uint32Array, n: number, out: Float32Array | null, step: number, readOnly: boolean, bf16: Uint16Array | null = null): boolean {
    const nat = this.nat;
    if (!nat || n > this.capacity) return false;
    if (this.slotBuf.length < n) this.slotBuf = new Int32Array(Math.max(n, 2 * this.slotBuf.length));
    const slots = this.slotBuf, dim = this.dim;
    let missing = 0;
    const m0 = this.prefind(nat, ids, n), hashHi = this.hashHiBuf, c = this.counters;
    const touch = readOnly ? 0 : 1;
    const acc = this.fillAcc, init = this.cfg.init, opt = this.cfg.optimizer;
    const stateInit = opt.kind === 'adagrad' ? opt.initialAccumulator : 0;
    for (let i = 0; i < n; i++) {
      // Stored ids, and new rows in never-used slots, in C up to the next id that needs
      // lookupFound (arrays re-read: TypeScript inserts grow them). Fresh slots only while
      // every id is admitted and nothing waits in the free list (insertNew takes those first).
      const slotLimit = this.cfg.admitProbability >= 1 && this.freeTop === 0
        ? Math.min(this.capacity, this.metaCap, this.rowChunks.length << CHUNK_SHIFT) : 0;
      acc[0] = 0; acc[1] = 0; acc[2] = 0; acc[3] = this.nextSlot; acc[4] = this.count;
      const j = nat.lookupFill(i, n, ids, this.foundBuf, hashHi, this.mutations === m0 ? 0 : 1,
        this.meta.i32, this.ids.table, this.ids.mask,
        this.numShards, this.shardIndex, this.cfg.id, touch, step, this.lru.ends, this.lru.seq, this.lruWindow(), this.useStamp, slots,
        slotLimit, this.ids.size >> 1, this.rowTab, this.stateTab, CHUNK_SHIFT, dim, this.stW,
        init.kind === 'uniform' ? 1 : 0, init.kind === 'uniform' ? init.scale : 0, this.initHi, this.initLo, stateInit, acc);
      const inserted = acc[1]!;
      c.hits += acc[0]!;
      c.misses += inserted + acc[2]!;
      missing += acc[2]!;
      if (inserted > 0) {
        c.inserts += inserted;
        this.count = acc[4]!;
        this.nextSlot = acc[3]!;
        this.mutations += inserted;
      }
      if (j >= n) break;
      i = j;
      const lo = ids[2 * i]!, hi = ids[2 * i + 1]!;
      const s = this.lookupFound(this.slotAt(i, hi, lo, m0), hashHi[i]!, hi, lo, step, readOnly);
      slots[i] = s;
      if (s < 0) missing++;
    }
    if (!readOnly) this.remember(ids, n, slots);
    if (bf16) nat.gatherBf16(n, dim, slots, this.rowTab, CHUNK_SHIFT, bf16);
    else nat.gather(n, dim, slots, this.rowTab, CHUNK_SHIFT, out!);
    for (let i = 0; missing > 0 && i < n; i++) {
      if (slots[i]! >= 0) continue;
      missing--;
      if (!bf16) { this.initRow(ids[2 * i + 1]!, ids[2 * i]!, out!, i * dim); continue; }
      this.initRow(ids[2 * i + 1]!, ids[2 * i]!, this.rowTmp, 0);
      const u = this.rowTmpU;
      for (let j = 0; j < dim; j++) {
        const x = u[j]!; // as lookupWire's loop (f32ToBf16)
        bf16[i * dim + j] = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 0x40) & 0xffff : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
      }
    }
    return true;
  }

  /**
   * Optimizer state of the ids with a non-zero mask byte, packed in id order into out
   * (stW per masked id): a stored row's state, or the initial state for an id that is not
   * stored. Changes nothing (call after the lookup).
   */
  gatherState(ids: Uint32Array, n: number, mask: Uint8Array, out: Float32Array): void {
    const w = this.stW;
    if (w === 0) return;
    for (let i = 0, k = 0; i < n; i++) {
      if (mask[i] === 0) continue;
      const s = this.find(ids[2 * i + 1]!, ids[2 * i]!);
      if (s < 0) initState(this.cfg.optimizer, out, k * w, this.dim);
      else {
        const o = (s & CHUNK_MASK) * w;
        out.set(this.stateChunks[s >>> CHUNK_SHIFT]!.subarray(o, o + w), k * w);
      }
      k++;
    }
  }

  /** Slot answering id (hi, lo) in a lookup (created if admitted, touched unless read-only), or -1: answer the init vector. */
  private lookupSlot(hi: number, lo: number, step: number, readOnly: boolean): number {
    const s = this.find(hi, lo);
    return this.lookupFound(s, mixOut.hi, hi, lo, step, readOnly);
  }

  /** lookupSlot once the index answered slot s (or -1) and hash hi word hh for the id. */
  private lookupFound(s: number, hh: number, hi: number, lo: number, step: number, readOnly: boolean): number {
    const c = this.counters;
    if (hh % this.numShards !== this.shardIndex || hi >>> 24 !== this.cfg.id) this.misrouted(hi, lo);
    if (s < 0) {
      c.misses++;
      if (readOnly) return -1;
      if (!this.admits(hi, lo, step)) { c.notAdmitted++; return -1; }
      s = this.insertNew(hi, lo);
    } else {
      c.hits++;
    }
    if (!readOnly) this.touch(s, step);
    return s;
  }

  /**
   * push() with the gradients as bfloat16 (the wire dtype; g16 holds n * dim values). With
   * the native library and no repeated id, SGD and Adagrad read them in place (no float32
   * staging copy: half a row of traffic less per row); otherwise they are decoded first,
   * which is exact (bfloat16 widens to float32 without rounding), so both ways are bit-identical.
   */
  pushBf16(ids: Uint32Array, n: number, g16: Uint16Array, step: number): { applied: number; dropped: number } {
    if (this.wireGrads.length < n * this.dim) this.wireGrads = new Float32Array(n * this.dim);
    if (this.nat && this.cfg.optimizer.kind !== 'adam') return this.push(ids, n, this.wireGrads, step, g16);
    decodeBf16(n * this.dim, g16, this.wireGrads);
    return this.push(ids, n, this.wireGrads, step);
  }

  /** Sums the gradients of duplicate ids, then applies the optimizer once per distinct stored row. */
  push(ids: Uint32Array, n: number, grads: Float32Array, step: number, g16: Uint16Array | null = null): { applied: number; dropped: number } {
    const dim = this.dim, c = this.counters;
    const nat = this.nat;
    // g16 (pushBf16, native only): grads is scratch, filled only if the float32 path needs it.
    if (g16 && (!nat || this.cfg.optimizer.kind === 'adam')) throw new Error(`group ${this.cfg.id}: bfloat16 gradients need the native SGD/Adagrad kernels`);
    if (this.uniqSlot.length < n) {
      this.uniqSlot = new Int32Array(n);
      this.gradSum = new Float32Array(n * dim);
      if (nat) { this.uOf = new Int32Array(n); this.firstRow = new Int32Array(n); }
    }
    this.beginCall(n);
    if (++this.stamp >= 0x7fffffff) {
      for (let s = 0; s < this.meta.cap; s++) this.meta.i32[s * META_INTS + M_MARK] = 0;
      this.stamp = 1;
    }
    const stamp = this.stamp, uniq = this.uniqSlot, sum = this.gradSum;
    // Native: record where each gradient row goes (uOf, firstRow) and sum only when ids repeat.
    const uOf = this.uOf, firstRow = this.firstRow;
    let nu = 0, dropped = 0, dup = false;
    const m0 = nat ? (this.recall(ids, n) ?? this.prefind(nat, ids, n)) : 0, hashHi = this.hashHiBuf, acc = this.hitAcc;
    for (let i = 0; i < n; i++) {
      if (nat) {
        // Stored ids in C up to the next one that needs the loop body below (arrays re-read: inserts grow them).
        acc[0] = nu; acc[1] = 0;
        const j = nat.pushHits(i, n, ids, this.foundBuf, hashHi, this.mutations === m0 ? 0 : 1,
          this.numShards, this.shardIndex, this.cfg.id, step, this.meta.i32, this.lru.ends, this.lru.seq, this.lruWindow(), this.useStamp,
          stamp, uniq, uOf, firstRow, acc);
        nu = acc[0]!;
        if (acc[1]) dup = true;
        if (j >= n) break;
        i = j;
      }
      const lo = ids[2 * i]!, hi = ids[2 * i + 1]!;
      let s = nat ? this.slotAt(i, hi, lo, m0) : this.find(hi, lo);
      if ((nat ? hashHi[i]! : mixOut.hi) % this.numShards !== this.shardIndex || hi >>> 24 !== this.cfg.id) this.misrouted(hi, lo);
      if (s < 0) {
        if (!this.admits(hi, lo, step)) { dropped++; if (nat) uOf[i] = -1; continue; }
        s = this.insertNew(hi, lo);
      }
      const m = this.meta.i32, r = s * META_INTS;
      if (m[r + M_MARK] === stamp) {
        if (nat) { uOf[i] = m[r + M_MPOS]!; dup = true; } else {
          const o = m[r + M_MPOS]! * dim;
          for (let j = 0; j < dim; j++) sum[o + j] += grads[i * dim + j]!;
        }
      } else {
        m[r + M_MARK] = stamp;
        m[r + M_MPOS] = nu;
        uniq[nu] = s;
        if (nat) { uOf[i] = nu; firstRow[nu] = i; } else {
          const o = nu * dim;
          for (let j = 0; j < dim; j++) sum[o + j] = grads[i * dim + j]!;
        }
        nu++;
      }
      this.touch(s, step);
    }
    const opt = this.cfg.optimizer, stW = this.stW;
    let applied = 0;
    if (nat) {
      if (g16 && dup) { decodeBf16(n * dim, g16, grads); g16 = null; } // sums are float32
      if (dup) nat.accum(n, dim, uOf, firstRow, grads, sum);
      const g = dup ? sum : grads, gRow = dup ? null : firstRow;
      const adam = opt.kind === 'adam';
      if (adam && this.adamStep.length < nu) { this.adamStep = new Float64Array(this.uniqSlot.length); this.adamBc2 = new Float64Array(this.uniqSlot.length); }
      if (!adam) {
        applied = nat.bumpSteps(nu, uniq, this.meta.i32);
        dropped += nu - applied; // evicted later in this same batch (batch larger than capacity)
      } else {
        for (let u = 0; u < nu; u++) {
          const s = uniq[u]!;
          if (s < 0) { dropped++; continue; } // evicted later in this same batch (batch larger than capacity)
          const t = ++this.meta.i32[s * META_INTS + M_STEP];
          this.adamStep[u] = opt.lr / (1 - Math.pow(opt.beta1, t)); // as applyRow
          this.adamBc2[u] = Math.sqrt(1 - Math.pow(opt.beta2, t));
          applied++;
        }
      }
      if (g16 && opt.kind === 'sgd') nat.sgdBf16(nu, dim, uniq, this.rowTab, CHUNK_SHIFT, g16, firstRow, opt.lr);
      else if (g16 && opt.kind === 'adagrad') nat.adagradBf16(nu, dim, uniq, this.rowTab, this.stateTab, CHUNK_SHIFT, g16, firstRow, opt.lr, opt.eps);
      else if (opt.kind === 'sgd') nat.sgd(nu, dim, uniq, this.rowTab, CHUNK_SHIFT, g, gRow, opt.lr);
      else if (opt.kind === 'adagrad') nat.adagrad(nu, dim, uniq, this.rowTab, this.stateTab, CHUNK_SHIFT, g, gRow, opt.lr, opt.eps);
      else nat.adam(nu, dim, uniq, this.rowTab, this.stateTab, CHUNK_SHIFT, g, gRow, this.adamStep, this.adamBc2, opt.beta1, opt.beta2, opt.eps);
      c.updates += applied;
      c.droppedGrads += dropped;
      return { applied, dropped };
    }
    for (let u = 0; u < nu; u++) {
      const s = uniq[u]!;
      if (s < 0) { dropped++; continue; } // evicted later in this same batch (batch larger than capacity)
      const t = ++this.meta.i32[s * META_INTS + M_STEP];
      const k = s >>> CHUNK_SHIFT, r = s & CHUNK_MASK;
      applyRow(opt, dim, this.rowChunks[k]!, r * dim, this.stateChunks[k]!, r * stW, sum, u * dim, t);
      applied++;
    }
    c.updates += applied;
    c.droppedGrads += dropped;
    return { applied, dropped };
  }

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

  /** Bytes held for resident rows (rows + state + metadata + index share) and bytes allocated in total. */
  memory(): { residentBytes: number; allocatedBytes: number } {
    const rowBytes = (this.dim + this.stW) * 4 + META_BYTES_PER_ROW;
    const indexBytes = this.ids.tableBytes;
    return {
      residentBytes: this.count * rowBytes + (this.count > 0 ? indexBytes : 0),
      allocatedBytes: this.rowChunks.length * CHUNK_ROWS * (this.dim + this.stW) * 4
        + this.metaCap * (META_BYTES_PER_ROW + 4) + indexBytes + this.uniqSlot.byteLength + this.gradSum.byteLength
        + this.recent.reduce((a, e) => a + e.ids.byteLength + e.slots.byteLength + e.hashHi.byteLength, 0),
    };
  }

  // ---- internals -------------------------------------------------------------

  private misrouted(hi: number, lo: number): never {
    const id = ((BigInt(hi) << 32n) | BigInt(lo)).toString(16);
    throw new Error(`group ${this.cfg.id}: id 0x${id} does not belong to shard ${this.shardIndex} of ${this.numShards} (or to this group)`);
  }

  /**
   * Keeps a training lookup's ids with the slots it resolved and their hash words (a small
   * ring, one entry per recent batch): a trainer pushes the gradients of exactly the ids it
   * looked up, in the same order, so that push can take its slots from here (recall)
   * instead of probing the index again. The slots are valid at the mutation count recorded:
   * a batch no larger than the capacity cannot evict its own rows, which are all touched.
   */
  private remember(ids: Uint32Array, n: number, slots: Int32Array): void {
    if (this.recent.length < RECENT_LOOKUPS) this.recent.push({ n: 0, ids: new Uint32Array(0), slots: new Int32Array(0), hashHi: new Uint32Array(0), mutations: 0 });
    const e = this.recent[this.recentNext]!;
    this.recentNext = (this.recentNext + 1) % RECENT_LOOKUPS;
    if (e.slots.length < n) { e.ids = new Uint32Array(2 * n); e.slots = new Int32Array(n); e.hashHi = new Uint32Array(n); }
    e.ids.set(ids.subarray(0, 2 * n));
    e.slots.set(slots.subarray(0, n));
    e.hashHi.set(this.hashHiBuf.subarray(0, n));
    e.n = n;
    e.mutations = this.mutations;
  }

  /**
   * If the last few training lookups include exactly these ids, puts their slots and hash
   * words where prefind would (foundBuf, hashHiBuf) and returns the mutation count they are
   * valid for; else null. Later changes to the index are handled as after prefind
   * (slotAt, and the kernels' check of each found slot's id).
   */
  private recall(ids: Uint32Array, n: number): number | null {
    const want = Buffer.from(ids.buffer, ids.byteOffset, 8 * n);
    for (const e of this.recent) {
      if (e.n !== n || !want.equals(Buffer.from(e.ids.buffer, e.ids.byteOffset, 8 * n))) continue;
      if (this.foundBuf.length < n) { this.foundBuf = new Int32Array(Math.max(n, 2 * this.foundBuf.length)); this.hashHiBuf = new Uint32Array(this.foundBuf.length); }
      this.foundBuf.set(e.slots.subarray(0, n));
      this.hashHiBuf.set(e.hashHi.subarray(0, n));
      e.n = 0; // used: a batch's gradients are pushed once
      return e.mutations;
    }
    return null;
  }

  /** Finds the slots of n ids in one native call (foundBuf, hashHiBuf); returns the mutation count they are valid for. */
  private prefind(nat: NativeSparse, ids: Uint32Array, n: number): number {
    if (this.foundBuf.length < n) { this.foundBuf = new Int32Array(Math.max(n, 2 * this.foundBuf.length)); this.hashHiBuf = new Uint32Array(this.foundBuf.length); }
    this.ids.findBatch(nat, ids, n, this.foundBuf, this.hashHiBuf);
    return this.mutations;
  }

  /**
   * Slot of id i of a prefind batch. Once the index has changed, a found slot still
   * holds this id exactly when its id words match (an evicted slot is re-used at once
   * for another id); an id not found may have been inserted since: ask the index.
   */
  private slotAt(i: number, hi: number, lo: number, m0: number): number {
    const s = this.foundBuf[i]!;
    if (this.mutations === m0 || (s >= 0 && this.ids.idLoOf(s) === lo && this.ids.idHiOf(s) === hi)) return s;
    return this.find(hi, lo);
  }

  private insertNew(hi: number, lo: number): number {
    this.mutations++;
    let s: number;
    if (this.freeTop > 0) s = this.free[--this.freeTop]!;
    else if (this.nextSlot < this.capacity) { s = this.nextSlot++; this.ensureSlot(s); }
    else {
      s = this.lru.tail;
      // A row this call already touched stays (see gatherNative); with at most capacity ids
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

  private touch(s: number, step: number): void {
    this.meta.setLastTouch(s, step);
    this.meta.i32[s * META_INTS + M_USE] = this.useStamp;
    this.lru.touch(s, this.lruWindow());
  }

  /** Links between a row's moves to the LRU head (lru-list.ts): 1 (exact LRU) under expiry, else an eighth of the capacity. */
  private lruWindow(): number {
    return this.cfg.expireSteps > 0 ? 1 : Math.max(1, this.capacity >> 3);
  }

  /** A new lookup or push call of n ids: a new M_USE stamp (rows it touches are not evicted by it while n <= capacity). */
  private beginCall(n: number): void {
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

/** bfloat16 -> float32 (exact), natively when available. */
function decodeBf16(n: number, src: Uint16Array, dst: Float32Array): void {
  if (decodeHalf(true, n, src, dst)) return;
  const u = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) u[i] = src[i]! << 16;
}
