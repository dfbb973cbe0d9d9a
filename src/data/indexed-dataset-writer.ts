// Streaming writer of Megatron MMIDIDX datasets (<prefix>.bin + <prefix>.idx).
// Tokens go straight to a temporary .bin through a buffer; only the per-sequence
// lengths (4 bytes each) and document boundaries (8 bytes each) stay in memory
// until finish() writes the .idx. Both files appear under their final names only
// on commit(), each by fsync + rename.
import { AtomicStreamWriter } from './atomic-stream.js';
import {
  DTYPE_SIZES, type IndexedDType, assertLittleEndianHost, bytesOf, dtypeRange, encodeIdxHeader,
} from './indexed-dataset-format.js';

export interface IndexedDatasetStats {
  dtype: IndexedDType;
  sequences: number;
  /** Documents (boundary entries in the .idx minus one). */
  documents: number;
  tokens: number;
  binBytes: number;
  idxBytes: number;
}

const MAX_SEQUENCE_LENGTH = 2147483647; // the .idx stores lengths as int32

type NumericTypedArray = Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array;

function isNumericTypedArray(a: ArrayLike<number>): a is NumericTypedArray {
  return ArrayBuffer.isView(a) && !(a instanceof DataView) && !(a instanceof BigInt64Array) && !(a instanceof BigUint64Array);
}

class GrowableInt32 {
  data = new Int32Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Int32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

class GrowableFloat64 {
  data = new Float64Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
}

export class IndexedDatasetWriter {
  readonly prefix: string;
  readonly dtype: IndexedDType;
  private readonly itemSize: number;
  private readonly lo: number;
  private readonly hi: number;
  private readonly integral: boolean;
  private readonly bin: AtomicStreamWriter;
  private idx: AtomicStreamWriter | undefined;
  private readonly lengths = new GrowableInt32();
  /** Document boundaries as sequence indices; Megatron starts them at 0. */
  private readonly docIndices = new GrowableFloat64();
  private openLength = 0;
  private tokens = 0;
  private state: 'open' | 'finished' | 'committed' | 'aborted' = 'open';
  private stats: IndexedDatasetStats | undefined;

  /**
   * `maxToken` (e.g. vocabSize - 1) tightens the range check beyond what the dtype holds;
   * `bufferBytes` sizes the .bin write buffer.
   */
  constructor(prefix: string, options: { dtype: IndexedDType; maxToken?: number; bufferBytes?: number }) {
    assertLittleEndianHost();
    this.prefix = prefix;
    this.dtype = options.dtype;
    if (!(this.dtype in DTYPE_SIZES)) throw new Error(`${prefix}: unknown dtype '${String(this.dtype)}'`);
    this.itemSize = DTYPE_SIZES[this.dtype];
    [this.lo, this.hi] = dtypeRange(this.dtype);
    if (options.maxToken !== undefined) this.hi = Math.min(this.hi, options.maxToken);
    this.integral = this.dtype !== 'float32' && this.dtype !== 'float64';
    this.bin = new AtomicStreamWriter(`${prefix}.bin`, options.bufferBytes);
    this.docIndices.push(0);
  }

  /** Appends tokens to the sequence being built (a long document may arrive in pieces). */
  append(tokens: ArrayLike<number>): void {
    if (this.state !== 'open') throw new Error(`${this.prefix}: append after finish/abort`);
    const n = tokens.length;
    if (this.openLength + n > MAX_SEQUENCE_LENGTH) {
      throw new Error(`${this.prefix}: sequence ${this.lengths.length} exceeds ${MAX_SEQUENCE_LENGTH} tokens (int32 length field)`);
    }
    if (!this.inRange(tokens, n)) this.throwOutOfRange(tokens, n);
    // Encode in chunks straight into the output buffer; typed-array input is
    // copied natively (the common case: tokenizers return Uint16/Int32 arrays).
    const typed = isNumericTypedArray(tokens);
    const chunk = 1 << 16;
    for (let start = 0; start < n; start += chunk) {
      const m = Math.min(chunk, n - start);
      const dst = this.bin.reserve(m * this.itemSize);
      const view = this.view(dst, m);
      if (view instanceof BigInt64Array) {
        for (let i = 0; i < m; i++) view[i] = BigInt(tokens[start + i]!);
      } else if (typed) {
        view.set(start === 0 && m === n ? tokens : tokens.subarray(start, start + m));
      } else {
        for (let i = 0; i < m; i++) view[i] = tokens[start + i]!;
      }
      this.bin.advance(m * this.itemSize);
    }
    this.openLength += n;
    this.tokens += n;
  }

  private inRange(tokens: ArrayLike<number>, n: number): boolean {
    if (n === 0) return true;
    const lo = this.lo, hi = this.hi;
    if (isNumericTypedArray(tokens) && !(tokens instanceof Float32Array || tokens instanceof Float64Array)) {
      let min = tokens[0]!, max = min;
      for (let i = 1; i < n; i++) {
        const v = tokens[i]!;
        if (v < min) min = v; else if (v > max) max = v;
      }
      return min >= lo && max <= hi;
    }
    for (let i = 0; i < n; i++) {
      const v = tokens[i]!;
      if (!(v >= lo && v <= hi) || (this.integral && !Number.isInteger(v))) return false;
    }
    return true;
  }

  private throwOutOfRange(tokens: ArrayLike<number>, n: number): never {
    let i = 0;
    for (; i < n; i++) {
      const v = tokens[i]!;
      if (!(v >= this.lo && v <= this.hi) || (this.integral && !Number.isInteger(v))) break;
    }
    throw new Error(`${this.prefix}: token ${tokens[i]} at position ${this.openLength + i} of sequence ${this.lengths.length} is outside [${this.lo}, ${this.hi}] (dtype ${this.dtype})`);
  }

  private view(dst: Uint8Array, m: number) {
    const off = dst.byteOffset;
    switch (this.dtype) {
      case 'uint8': return new Uint8Array(dst.buffer, off, m);
      case 'int8': return new Int8Array(dst.buffer, off, m);
      case 'int16': return new Int16Array(dst.buffer, off, m);
      case 'uint16': return new Uint16Array(dst.buffer, off, m);
      case 'int32': return new Int32Array(dst.buffer, off, m);
      case 'int64': return new BigInt64Array(dst.buffer, off, m);
      case 'float32': return new Float32Array(dst.buffer, off, m);
      case 'float64': return new Float64Array(dst.buffer, off, m);
    }
  }

  /** Closes the current sequence (possibly empty). */
  endSequence(): void {
    if (this.state !== 'open') throw new Error(`${this.prefix}: endSequence after finish/abort`);
    this.lengths.push(this.openLength);
    this.openLength = 0;
  }

  /** Marks a document boundary after the sequences added so far (Megatron's end_document). */
  endDocument(): void {
    if (this.state !== 'open') throw new Error(`${this.prefix}: endDocument after finish/abort`);
    if (this.openLength > 0) this.endSequence();
    this.docIndices.push(this.lengths.length);
  }

  /** One sequence that is one document: the usual GPT-corpus case. */
  addDocument(tokens: ArrayLike<number>): void {
    this.append(tokens);
    this.endSequence();
    this.endDocument();
  }

  get sequenceCount(): number { return this.lengths.length; }
  get documentCount(): number { return this.docIndices.length - 1; }
  get tokenCount(): number { return this.tokens; }

  /**
   * Writes the .idx and seals both files under temporary names; commit() (or
   * finish({ commit: true }), the default) then renames them into place.
   */
  finish(options: { commit?: boolean } = {}): IndexedDatasetStats {
    if (this.state !== 'open') throw new Error(`${this.prefix}: finish called twice`);
    if (this.openLength > 0) throw new Error(`${this.prefix}: finish with an unterminated sequence of ${this.openLength} tokens (call endSequence/endDocument)`);
    try {
      this.bin.seal();
      const idx = new AtomicStreamWriter(`${this.prefix}.idx`);
      this.idx = idx;
      const S = this.lengths.length, D = this.docIndices.length;
      idx.write(encodeIdxHeader({ dtype: this.dtype, sequenceCount: S, documentCount: D }));
      idx.write(bytesOf(this.lengths.data.subarray(0, S)));
      // Pointers and document indices are int64; build them a chunk at a time
      // so a 50M-document index never needs a second full-size copy.
      const chunk = 1 << 16;
      const tmp = new BigInt64Array(chunk);
      let ptr = 0;
      for (let s = 0; s < S; s += chunk) {
        const m = Math.min(chunk, S - s);
        for (let i = 0; i < m; i++) {
          tmp[i] = BigInt(ptr);
          ptr += this.lengths.data[s + i]! * this.itemSize;
        }
        idx.write(bytesOf(tmp.subarray(0, m)));
      }
      for (let d = 0; d < D; d += chunk) {
        const m = Math.min(chunk, D - d);
        for (let i = 0; i < m; i++) tmp[i] = BigInt(this.docIndices.data[d + i]!);
        idx.write(bytesOf(tmp.subarray(0, m)));
      }
      idx.seal();
      this.state = 'finished';
      this.stats = {
        dtype: this.dtype, sequences: S, documents: D - 1, tokens: this.tokens,
        binBytes: this.bin.bytesWritten, idxBytes: idx.bytesWritten,
      };
    } catch (e) {
      this.abort();
      throw e;
    }
    if (options.commit ?? true) this.commit();
    return this.stats;
  }

  /** Renames the sealed .bin then .idx into place. */
  commit(): void {
    if (this.state === 'committed') return;
    if (this.state !== 'finished') throw new Error(`${this.prefix}: commit before finish`);
    this.bin.commit();
    this.idx!.commit();
    this.state = 'committed';
  }

  /** Drops the temporary files; the targets are left untouched. */
  abort(): void {
    if (this.state === 'committed') return;
    this.bin.abort();
    this.idx?.abort();
    this.state = 'aborted';
  }
}

/** Writes a whole dataset, one sequence per document. */
export function writeIndexedDataset(prefix: string, documents: Iterable<ArrayLike<number>>, dtype: IndexedDType): IndexedDatasetStats {
  const w = new IndexedDatasetWriter(prefix, { dtype });
  try {
    for (const d of documents) w.addDocument(d);
  } catch (e) {
    w.abort();
    throw e;
  }
  return w.finish();
}
