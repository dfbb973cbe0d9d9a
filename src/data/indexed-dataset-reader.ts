// Reader of Megatron MMIDIDX datasets. The .idx (12 bytes per sequence) is
// read into typed arrays and validated once; the .bin is never loaded: token
// windows are read with positioned fs.readSync calls, the way an mmap would be
// paged, so a 100 GB corpus costs only its index in memory.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import {
  DTYPE_SIZES, IDX_HEADER_BYTES, type IndexedDType, allocDTypeArray, assertLittleEndianHost, bytesOf,
  decodeIdxHeader, idxByteLength,
} from './indexed-dataset-format.js';

/** Anything the token loader can sample from: one stream of token ids. */
export interface TokenSource {
  readonly numTokens: number;
  /** Tokens [start, start+count) of the concatenated stream. */
  readTokens(start: number, count: number, out?: Int32Array): Int32Array;
}

/** Accepts `<prefix>`, `<prefix>.bin` or `<prefix>.idx`. */
export function datasetPrefix(path: string): string {
  return path.endsWith('.bin') || path.endsWith('.idx') ? path.slice(0, -4) : path;
}

function openForRead(path: string, what: string): number {
  try {
    return openSync(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`${path}: ${what} file not found`);
    throw new Error(`${path}: cannot open ${what} file: ${err.message}`);
  }
}

function readFully(fd: number, dst: Uint8Array, position: number, file: string): void {
  let off = 0;
  while (off < dst.byteLength) {
    const n = readSync(fd, dst, off, dst.byteLength - off, position + off);
    if (n === 0) throw new Error(`${file}: unexpected end of file reading ${dst.byteLength} bytes at offset ${position}`);
    off += n;
  }
}

export class IndexedDataset implements TokenSource {
  readonly prefix: string;
  readonly idxPath: string;
  readonly binPath: string;
  readonly dtype: IndexedDType;
  readonly itemSize: number;
  /** Tokens per sequence. */
  readonly sequenceLengths: Int32Array;
  /** Byte offset of each sequence in the .bin (exact below 2^53). */
  readonly sequencePointers: Float64Array;
  /** Document boundaries as sequence indices (Megatron's document_indices, usually 0..S). */
  readonly documentIndices: Float64Array;
  /** int8 modes per sequence when the index is multimodal, else undefined. */
  readonly sequenceModes: Int8Array | undefined;
  readonly numTokens: number;
  readonly binBytes: number;
  /** True when sequences are stored back to back from byte 0, as the writer always does. */
  readonly contiguous: boolean;
  private binFd: number;
  private cumLengths: Float64Array | undefined;

  static open(path: string): IndexedDataset { return new IndexedDataset(path); }

  constructor(path: string) {
    assertLittleEndianHost();
    this.prefix = datasetPrefix(path);
    this.idxPath = `${this.prefix}.idx`;
    this.binPath = `${this.prefix}.bin`;
    const idxFd = openForRead(this.idxPath, 'index');
    try {
      const idxSize = fstatSync(idxFd).size;
      const head = new Uint8Array(Math.min(IDX_HEADER_BYTES, idxSize));
      readFully(idxFd, head, 0, this.idxPath);
      const h = decodeIdxHeader(head, this.idxPath);
      this.dtype = h.dtype;
      this.itemSize = DTYPE_SIZES[h.dtype];
      const S = h.sequenceCount, D = h.documentCount;
      const expected = idxByteLength(S, D);
      const multimodal = idxSize === expected + S && S > 0;
      if (idxSize !== expected && !multimodal) {
        throw new Error(`${this.idxPath}: file is ${idxSize} bytes but fields 'sequence_count'=${S} and 'document_count'=${D} imply ${expected} bytes`);
      }
      this.sequenceLengths = new Int32Array(S);
      readFully(idxFd, bytesOf(this.sequenceLengths), IDX_HEADER_BYTES, this.idxPath);
      this.sequencePointers = this.readInt64s(idxFd, IDX_HEADER_BYTES + 4 * S, S, 'sequence_pointers');
      this.documentIndices = this.readInt64s(idxFd, IDX_HEADER_BYTES + 12 * S, D, 'document_indices');
      if (multimodal) {
        this.sequenceModes = new Int8Array(S);
        readFully(idxFd, bytesOf(this.sequenceModes), expected, this.idxPath);
      }
    } finally {
      closeSync(idxFd);
    }
    this.binFd = openForRead(this.binPath, 'data');
    try {
      this.binBytes = fstatSync(this.binFd).size;
      const r = this.validate();
      this.numTokens = r.tokens;
      this.contiguous = r.contiguous;
    } catch (e) {
      closeSync(this.binFd);
      throw e;
    }
  }

  // int64 arrays are read as (lo, hi) uint32 pairs: much faster than BigInt
  // conversion, and exact for every offset a real file can have.
  private readInt64s(fd: number, position: number, count: number, field: string): Float64Array {
    const out = new Float64Array(count);
    const chunk = 1 << 16;
    const raw = new Uint32Array(2 * chunk);
    for (let s = 0; s < count; s += chunk) {
      const m = Math.min(chunk, count - s);
      readFully(fd, bytesOf(raw.subarray(0, 2 * m)), position + 8 * s, this.idxPath);
      for (let i = 0; i < m; i++) {
        const lo = raw[2 * i]!, hi = raw[2 * i + 1]!;
        if (hi >= 0x200000) {
          throw new Error(`${this.idxPath}: field '${field}[${s + i}]' is negative or beyond 2^53`);
        }
        out[s + i] = hi * 4294967296 + lo;
      }
    }
    return out;
  }

  private validate(): { tokens: number; contiguous: boolean } {
    const L = this.sequenceLengths, P = this.sequencePointers, size = this.itemSize;
    let tokens = 0;
    let contiguous = true;
    let expectPtr = 0;
    for (let i = 0; i < L.length; i++) {
      const len = L[i]!, ptr = P[i]!;
      if (len < 0) throw new Error(`${this.idxPath}: field 'sequence_lengths[${i}]' is ${len}, negative`);
      const end = ptr + len * size;
      if (end > this.binBytes) {
        throw new Error(`${this.idxPath}: field 'sequence_pointers[${i}]' = ${ptr} with length ${len} ends at byte ${end}, past the end of ${this.binPath} (${this.binBytes} bytes)`);
      }
      if (ptr !== expectPtr) contiguous = false;
      expectPtr = end;
      tokens += len;
    }
    const Di = this.documentIndices, S = L.length;
    for (let d = 0; d < Di.length; d++) {
      const v = Di[d]!;
      if (v > S) throw new Error(`${this.idxPath}: field 'document_indices[${d}]' is ${v}, beyond sequence_count ${S}`);
      if (d > 0 && v < Di[d - 1]!) throw new Error(`${this.idxPath}: field 'document_indices[${d}]' is ${v}, smaller than the previous entry ${Di[d - 1]}`);
    }
    return { tokens, contiguous };
  }

  get sequenceCount(): number { return this.sequenceLengths.length; }
  /** Number of documents (boundaries minus one). */
  get documentCount(): number { return Math.max(0, this.documentIndices.length - 1); }

  /** Sequences [first, last) making up document d. */
  documentRange(d: number): [number, number] {
    if (!(d >= 0 && d < this.documentCount)) throw new Error(`${this.idxPath}: document ${d} out of range [0, ${this.documentCount})`);
    return [this.documentIndices[d]!, this.documentIndices[d + 1]!];
  }

  /** Tokens [offset, offset+length) of sequence i. */
  getSequence(i: number, offset = 0, length?: number): Int32Array {
    if (!(i >= 0 && i < this.sequenceCount)) throw new Error(`${this.idxPath}: sequence ${i} out of range [0, ${this.sequenceCount})`);
    const seqLen = this.sequenceLengths[i]!;
    const n = length ?? seqLen - offset;
    if (offset < 0 || n < 0 || offset + n > seqLen) {
      throw new Error(`${this.idxPath}: window [${offset}, ${offset + n}) outside sequence ${i} of length ${seqLen}`);
    }
    const out = new Int32Array(n);
    this.readAt(this.sequencePointers[i]! + offset * this.itemSize, n, out, 0);
    return out;
  }

  readTokens(start: number, count: number, out?: Int32Array): Int32Array {
    if (!(start >= 0 && count >= 0 && start + count <= this.numTokens)) {
      throw new Error(`${this.binPath}: token window [${start}, ${start + count}) outside [0, ${this.numTokens})`);
    }
    const dst = out ?? new Int32Array(count);
    if (dst.length < count) throw new Error(`${this.binPath}: output array holds ${dst.length} < ${count} tokens`);
    if (this.contiguous) {
      this.readAt(start * this.itemSize, count, dst, 0);
      return dst;
    }
    // Sequences are scattered in the .bin: walk them from the one holding `start`.
    const cum = this.cumulative();
    let lo = 0, hi = this.sequenceCount - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (cum[mid]! <= start) lo = mid; else hi = mid - 1;
    }
    let seq = lo, pos = start - cum[seq]!, done = 0;
    while (done < count) {
      const take = Math.min(this.sequenceLengths[seq]! - pos, count - done);
      if (take > 0) this.readAt(this.sequencePointers[seq]! + pos * this.itemSize, take, dst, done);
      done += take;
      seq++;
      pos = 0;
    }
    return dst;
  }

  private cumulative(): Float64Array {
    if (!this.cumLengths) {
      const c = new Float64Array(this.sequenceCount + 1);
      for (let i = 0; i < this.sequenceCount; i++) c[i + 1] = c[i]! + this.sequenceLengths[i]!;
      this.cumLengths = c;
    }
    return this.cumLengths;
  }

  private scratch: Map<IndexedDType, ReturnType<typeof allocDTypeArray>> = new Map();

  /** Reads `count` items at byte `position` of the .bin into dst[dstOff...]. */
  private readAt(position: number, count: number, dst: Int32Array, dstOff: number): void {
    if (this.binFd < 0) throw new Error(`${this.binPath}: dataset is closed`);
    if (this.dtype === 'int32') {
      readFully(this.binFd, bytesOf(dst.subarray(dstOff, dstOff + count)), position, this.binPath);
      return;
    }
    let tmp = this.scratch.get(this.dtype);
    if (!tmp || tmp.length < count) {
      tmp = allocDTypeArray(this.dtype, Math.max(count, 4096));
      this.scratch.set(this.dtype, tmp);
    }
    const view = tmp.subarray(0, count);
    readFully(this.binFd, bytesOf(view), position, this.binPath);
    if (view instanceof BigInt64Array) {
      for (let i = 0; i < count; i++) {
        const v = view[i]!;
        if (v > 2147483647n || v < -2147483648n) throw new Error(`${this.binPath}: token ${v} at byte ${position + 8 * i} does not fit int32`);
        dst[dstOff + i] = Number(v);
      }
    } else {
      dst.set(view, dstOff);
    }
  }

  close(): void {
    if (this.binFd >= 0) {
      closeSync(this.binFd);
      this.binFd = -1;
    }
  }
}

export function openIndexedDataset(path: string): IndexedDataset {
  return new IndexedDataset(path);
}
