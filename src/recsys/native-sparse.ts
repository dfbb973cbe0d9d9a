// koffi bindings of native/sparse.c (embedding-server row gather and per-row
// optimizers) plus bulk wire codecs on top of the cast kernels of native/cast.c.
// Everything returns null / false when the native library is unavailable (or
// ATHANOR_BACKEND=reference); callers then keep their TypeScript loops.
//
// Row slabs are addressed through a chunk table (BigUint64Array of addresses filled
// by `setPtr`): ArrayBuffer backing stores of this size never move, and the table's
// owner keeps the slabs referenced for as long as the table is used.
import { nativeFamily } from '../backend/native.js';
import { nativeBasic } from '../backend/native-basic.js';

export interface NativeSparse {
  find(n: number, ids: Uint32Array, table: Int32Array, mask: number, meta: Int32Array, slots: Int32Array, hashHi: Uint32Array): void;
  setPtr(tab: BigUint64Array, k: number, p: Float32Array): void;
  hugeSkip(p: ArrayBufferView | ArrayBuffer): number;
  adviseHuge(p: ArrayBufferView, bytes: number): number;
  gather(n: number, dim: number, slots: Int32Array, tab: BigUint64Array, shift: number, out: Float32Array): void;
  accum(n: number, dim: number, uOf: Int32Array, first: Int32Array, g: Float32Array, sum: Float32Array): void;
  sgd(nu: number, dim: number, slots: Int32Array, rows: BigUint64Array, shift: number, g: Float32Array, gRow: Int32Array | null, lr: number): void;
  sgdBf16(nu: number, dim: number, slots: Int32Array, rows: BigUint64Array, shift: number, g: Uint16Array, gRow: Int32Array, lr: number): void;
  adagradBf16(nu: number, dim: number, slots: Int32Array, rows: BigUint64Array, state: BigUint64Array, shift: number,
    g: Uint16Array, gRow: Int32Array, lr: number, eps: number): void;
  adagrad(nu: number, dim: number, slots: Int32Array, rows: BigUint64Array, state: BigUint64Array, shift: number,
    g: Float32Array, gRow: Int32Array | null, lr: number, eps: number): void;
  adam(nu: number, dim: number, slots: Int32Array, rows: BigUint64Array, state: BigUint64Array, shift: number,
    g: Float32Array, gRow: Int32Array | null, stepSize: Float64Array, bc2Sqrt: Float64Array, b1: number, b2: number, eps: number): void;
  pushHits(i0: number, n: number, ids: Uint32Array, found: Int32Array, hashHi: Uint32Array, check: number,
    numShards: number, shardIndex: number, groupId: number, step: number, meta: Int32Array, ends: Int32Array,
    seq: Float64Array, window: number, use: number, stamp: number, uniq: Int32Array, uOf: Int32Array, firstRow: Int32Array, acc: Int32Array): number;
  bumpSteps(nu: number, uniq: Int32Array, meta: Int32Array): number;
  gatherBf16(n: number, dim: number, slots: Int32Array, tab: BigUint64Array, shift: number, out: Uint16Array): void;
  lookupFill(i0: number, n: number, ids: Uint32Array, found: Int32Array, hashHi: Uint32Array, check: number,
    meta: Int32Array, table: Int32Array, mask: number,
    numShards: number, shardIndex: number, groupId: number, touch: number, step: number,
    ends: Int32Array, seq: Float64Array, window: number, use: number, slots: Int32Array,
    slotLimit: number, countLimit: number, rowTab: BigUint64Array, stateTab: BigUint64Array, shift: number,
    dim: number, stW: number, initUniform: number, initScale: number, initHi: number, initLo: number,
    stateInit: number, acc: Int32Array): number;
}

const bind = nativeFamily<NativeSparse>({
  find: 'void athn_sparse_find(int n, const uint32_t *ids, const int32_t *table, int mask, const int32_t *meta, _Inout_ int32_t *slots, _Inout_ uint32_t *hashHi)',
  setPtr: 'void athn_sparse_set_ptr(_Inout_ uint64_t *tab, int k, const void *p)',
  hugeSkip: 'int athn_sparse_huge_skip(const void *p)',
  adviseHuge: 'int athn_sparse_advise_huge(const void *p, int64_t bytes)',
  gather: 'void athn_sparse_gather(int n, int dim, const int *slots, const uint64_t *tab, int shift, _Inout_ float *out)',
  accum: 'void athn_sparse_accum(int n, int dim, const int *uOf, const int *first, const float *g, _Inout_ float *sum)',
  sgd: 'void athn_sparse_sgd(int nu, int dim, const int *slots, const uint64_t *rows, int shift, const float *g, const int *gRow, double lr)',
  sgdBf16: 'void athn_sparse_sgd_bf16(int nu, int dim, const int *slots, const uint64_t *rows, int shift, const uint16_t *g, const int *gRow, double lr)',
  adagradBf16: 'void athn_sparse_adagrad_bf16(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift, const uint16_t *g, const int *gRow, double lr, double eps)',
  adagrad: 'void athn_sparse_adagrad(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift, const float *g, const int *gRow, double lr, double eps)',
  adam: 'void athn_sparse_adam(int nu, int dim, const int *slots, const uint64_t *rows, const uint64_t *state, int shift, const float *g, const int *gRow, const double *stepSize, const double *bc2Sqrt, double b1, double b2, double eps)',
  pushHits: 'int athn_sparse_push_hits(int i0, int n, const uint32_t *ids, const int32_t *found, const uint32_t *hashHi, int check, int numShards, int shardIndex, int groupId, double step, _Inout_ int32_t *meta, _Inout_ int32_t *ends, _Inout_ double *seq, double window, int use, int stamp, _Inout_ int32_t *uniq, _Inout_ int32_t *uOf, _Inout_ int32_t *firstRow, _Inout_ int32_t *acc)',
  bumpSteps: 'int athn_sparse_bump_steps(int nu, const int32_t *uniq, _Inout_ int32_t *meta)',
  gatherBf16: 'void athn_sparse_gather_bf16(int n, int dim, const int *slots, const uint64_t *tab, int shift, _Inout_ uint16_t *out)',
  lookupFill: 'int athn_sparse_lookup_fill(int i0, int n, const uint32_t *ids, const int32_t *found, const uint32_t *hashHi, int check, _Inout_ int32_t *meta, _Inout_ int32_t *table, int mask, int numShards, int shardIndex, int groupId, int touch, double step, _Inout_ int32_t *ends, _Inout_ double *seq, double window, int use, _Inout_ int32_t *slots, int slotLimit, int countLimit, const uint64_t *rowTab, const uint64_t *stateTab, int shift, int dim, int stW, int initUniform, double initScale, uint32_t initHi, uint32_t initLo, double stateInit, _Inout_ int32_t *acc)',
}, () => nativeBasic() !== null);

/** The bound kernels, or null (no library, forced reference, or an older build without them). */
export function nativeSparse(): NativeSparse | null {
  return bind();
}

type TypedArrayOf<T> = { new(buf: ArrayBuffer, off: number, n: number): T; new(n: number): T; BYTES_PER_ELEMENT: number };
const HUGE_BYTES = 2 << 20;

/**
 * A zeroed typed array of n elements for randomly accessed store data (row slabs, per-slot
 * metadata, the id index). From 4 MiB on it starts on a 2 MiB boundary of a slightly larger
 * buffer and asks for transparent huge pages, so that random rows stop costing a TLB miss
 * each; the extra up to 2 MiB stays untouched (virtual only). Plain array otherwise, or
 * without the native library.
 */
export function storeArray<T>(ctor: TypedArrayOf<T>, n: number): T {
  const bytes = n * ctor.BYTES_PER_ELEMENT, nat = nativeSparse();
  if (!nat || bytes < 2 * HUGE_BYTES) return new ctor(n);
  const buf = new ArrayBuffer(bytes + HUGE_BYTES);
  const skip = nat.hugeSkip(buf);
  const a = new ctor(buf, skip, n);
  nat.adviseHuge(a as unknown as ArrayBufferView, bytes);
  return a;
}

// The cast kernels go multi-threaded (OpenMP) from 32768 elements; an embedding
// server is one core per shard, so bulk conversions are fed in serial pieces.
const SERIAL_PIECE = 32768 - 8;

/** Encodes n float32 values as bfloat16/float16 into out (bit-exact with core/dtype); false without the native library. */
export function encodeHalf(bf16: boolean, n: number, src: Float32Array, out: Uint16Array): boolean {
  const b = nativeBasic();
  if (!b) return false;
  const f = bf16 ? b.f32ToBf16 : b.f32ToF16;
  for (let o = 0; o < n; o += SERIAL_PIECE) f(Math.min(SERIAL_PIECE, n - o), src, o, out, o);
  return true;
}

/** Decodes n bfloat16/float16 values into dst; false without the native library. */
export function decodeHalf(bf16: boolean, n: number, src: Uint16Array, dst: Float32Array): boolean {
  const b = nativeBasic();
  if (!b) return false;
  const f = bf16 ? b.bf16ToF32 : b.f16ToF32;
  for (let o = 0; o < n; o += SERIAL_PIECE) f(Math.min(SERIAL_PIECE, n - o), src, o, dst, o);
  return true;
}
