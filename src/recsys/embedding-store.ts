// One feature group's table on one server: the batch operations (lookup, lookupWire,
// gatherState, push, pushBf16) on the rows that GroupSlots (group-slots.ts) keeps: row and
// state slabs, per-slot records, the id index, the windowed LRU list, admission, eviction
// and expiry (the row lifecycle is described there).
//
// With the native library, a batch's id lookups, row gathers, gradient sums and
// optimizer updates are one C call each (native-sparse.ts, native/sparse.c), and so is
// the per-row bookkeeping of stored ids (shard check, LRU touch, hit counter, duplicate
// marks): those kernels stop at each id that needs TypeScript (a miss: admission and
// insertion, group-slots.ts), which is handled before the kernel resumes, so both paths apply the
// same operations in the same id order and leave bit-identical tables. Without the
// library the TypeScript loops below run; they are the kernels' test oracle.
import { f32ToF16 } from '../core/dtype.js';
import { mixOut } from './embedding-hash.js';
import type { GroupConfig } from './embedding-config.js';
import { CHUNK_MASK, CHUNK_ROWS, CHUNK_SHIFT, GroupSlots, META_BYTES_PER_ROW } from './group-slots.js';
import { RecentLookups } from './recent-lookups.js';
import { M_MARK, M_MPOS, M_STEP, META_INTS } from './slot-meta.js';
import { applyRow, initState } from './sparse-optimizer.js';
import { encodeHalf, type NativeSparse } from './native-sparse.js';
import { bf16RowFromBits, decodeBf16 } from './wire-rows.js';

export { META_BYTES_PER_ROW, type GroupCounters, type RowBlock } from './group-slots.js';

export class GroupTable extends GroupSlots {
  private readonly rowTmp: Float32Array;
  private readonly rowTmpU: Uint32Array;
  private gradSum = new Float32Array(0);
  // Native batch path (native-sparse.ts): reused per-batch scratch.
  private hitAcc = new Int32Array(2); // push kernel's [distinct rows so far, duplicates seen]
  private fillAcc = new Int32Array(5); // lookup kernel's [hits, inserts, read-only misses, nextSlot, count]
  private slotBuf = new Int32Array(0);
  private stage = new Float32Array(0);
  private uOf = new Int32Array(0);
  private firstRow = new Int32Array(0);
  private adamStep = new Float64Array(0);
  private adamBc2 = new Float64Array(0);
  private foundBuf = new Int32Array(0);
  private hashHiBuf = new Uint32Array(0);
  private wireGrads = new Float32Array(0);
  private readonly recent = new RecentLookups();

  /** `native: false` forces the TypeScript loops (the reference the kernel tests compare against). */
  constructor(cfg: GroupConfig, seed: number, opts: { native?: boolean } = {}) {
    super(cfg, seed, opts);
    this.rowTmp = new Float32Array(cfg.dim);
    this.rowTmpU = new Uint32Array(this.rowTmp.buffer);
  }

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
      if (bf) bf16RowFromBits(srcU, o, out, d, dim);
      else for (let j = 0; j < dim; j++) out[d + j] = f32ToF16(src[o + j]!);
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
      bf16RowFromBits(this.rowTmpU, 0, bf16, i * dim, dim); // as lookupWire's loop
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

  /** Bytes held for resident rows (rows + state + metadata + index share) and bytes allocated in total. */
  memory(): { residentBytes: number; allocatedBytes: number } {
    const rowBytes = (this.dim + this.stW) * 4 + META_BYTES_PER_ROW;
    const indexBytes = this.ids.tableBytes;
    return {
      residentBytes: this.count * rowBytes + (this.count > 0 ? indexBytes : 0),
      allocatedBytes: this.rowChunks.length * CHUNK_ROWS * (this.dim + this.stW) * 4
        + this.metaCap * (META_BYTES_PER_ROW + 4) + indexBytes + this.uniqSlot.byteLength + this.gradSum.byteLength
        + this.recent.bytes(),
    };
  }

  // ---- internals -------------------------------------------------------------

  /** Keeps a training lookup's ids, slots and hash words for the push that follows it (recent-lookups.ts). */
  private remember(ids: Uint32Array, n: number, slots: Int32Array): void {
    this.recent.remember(ids, n, slots, this.hashHiBuf, this.mutations);
  }

  /**
   * If the last few training lookups include exactly these ids, puts their slots and hash
   * words where prefind would (foundBuf, hashHiBuf) and returns the mutation count they are
   * valid for; else null. Later changes to the index are handled as after prefind
   * (slotAt, and the kernels' check of each found slot's id).
   */
  private recall(ids: Uint32Array, n: number): number | null {
    const e = this.recent.take(ids, n);
    if (!e) return null;
    this.reserveFound(n);
    this.foundBuf.set(e.slots.subarray(0, n));
    this.hashHiBuf.set(e.hashHi.subarray(0, n));
    return e.mutations;
  }

  private reserveFound(n: number): void {
    if (this.foundBuf.length < n) { this.foundBuf = new Int32Array(Math.max(n, 2 * this.foundBuf.length)); this.hashHiBuf = new Uint32Array(this.foundBuf.length); }
  }

  /** Finds the slots of n ids in one native call (foundBuf, hashHiBuf); returns the mutation count they are valid for. */
  private prefind(nat: NativeSparse, ids: Uint32Array, n: number): number {
    this.reserveFound(n);
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
}
