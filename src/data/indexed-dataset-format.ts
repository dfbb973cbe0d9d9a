// The MMIDIDX layout of Megatron-LM (megatron/core/datasets/indexed_dataset.py),
// shared by the writer and the reader so both agree to the byte:
//
//   <prefix>.idx  (all integers little-endian)
//     magic             9 bytes  "MMIDIDX\0\0"
//     version           uint64   1
//     dtype code        uint8    see DTYPE_CODES
//     sequence count    uint64   S
//     document count    uint64   D   (document boundaries; D = documents + 1)
//     sequence lengths  int32[S] tokens per sequence
//     sequence pointers int64[S] byte offset of each sequence in .bin
//     document indices  int64[D] sequence index where each document starts, then S
//     (multimodal only: int8[S] sequence modes; tolerated by the reader, never written)
//
//   <prefix>.bin  the token ids of every sequence, in the dtype, back to back.
import { endianness } from 'node:os';

export const IDX_MAGIC = Uint8Array.of(0x4d, 0x4d, 0x49, 0x44, 0x49, 0x44, 0x58, 0x00, 0x00); // "MMIDIDX\0\0"
export const IDX_VERSION = 1;
/** Bytes before the sequence lengths: magic 9 + version 8 + dtype 1 + counts 8 + 8. */
export const IDX_HEADER_BYTES = 34;

export type IndexedDType = 'uint8' | 'int8' | 'int16' | 'int32' | 'int64' | 'float64' | 'float32' | 'uint16';

/** Megatron's `DType` enum values. */
export const DTYPE_CODES: Readonly<Record<IndexedDType, number>> = {
  uint8: 1, int8: 2, int16: 3, int32: 4, int64: 5, float64: 6, float32: 7, uint16: 8,
};

export const DTYPE_SIZES: Readonly<Record<IndexedDType, number>> = {
  uint8: 1, int8: 1, int16: 2, int32: 4, int64: 8, float64: 8, float32: 4, uint16: 2,
};

export function dtypeFromCode(code: number): IndexedDType | undefined {
  for (const [name, c] of Object.entries(DTYPE_CODES)) if (c === code) return name as IndexedDType;
  return undefined;
}

/** Megatron's `DType.optimal_dtype`: uint16 below 65500 ids, else int32. */
export function optimalTokenDType(vocabSize: number): IndexedDType {
  return vocabSize < 65500 ? 'uint16' : 'int32';
}

/** Inclusive range of values a dtype can hold exactly as a JS number. */
export function dtypeRange(dtype: IndexedDType): [number, number] {
  switch (dtype) {
    case 'uint8': return [0, 255];
    case 'int8': return [-128, 127];
    case 'int16': return [-32768, 32767];
    case 'uint16': return [0, 65535];
    case 'int32': return [-2147483648, 2147483647];
    case 'int64': case 'float64': return [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER];
    case 'float32': return [-16777216, 16777216];
  }
}

/** A typed array of the dtype, used to encode/decode .bin windows without a DataView per element. */
export type DTypeArray = Uint8Array | Int8Array | Int16Array | Uint16Array | Int32Array | BigInt64Array | Float32Array | Float64Array;

export function allocDTypeArray(dtype: IndexedDType, length: number): DTypeArray {
  switch (dtype) {
    case 'uint8': return new Uint8Array(length);
    case 'int8': return new Int8Array(length);
    case 'int16': return new Int16Array(length);
    case 'uint16': return new Uint16Array(length);
    case 'int32': return new Int32Array(length);
    case 'int64': return new BigInt64Array(length);
    case 'float32': return new Float32Array(length);
    case 'float64': return new Float64Array(length);
  }
}

export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// Typed-array views are host-endian while the files are little-endian; every
// machine Athanor targets (x86-64, aarch64) is little-endian, so refuse rather
// than silently byte-swap on the odd big-endian host.
export function assertLittleEndianHost(): void {
  if (endianness() !== 'LE') throw new Error('indexed dataset: big-endian hosts are not supported');
}

export interface IdxHeader {
  dtype: IndexedDType;
  sequenceCount: number;
  documentCount: number;
}

export function encodeIdxHeader(h: IdxHeader): Uint8Array {
  const out = new Uint8Array(IDX_HEADER_BYTES);
  const dv = new DataView(out.buffer);
  out.set(IDX_MAGIC, 0);
  dv.setBigUint64(9, BigInt(IDX_VERSION), true);
  dv.setUint8(17, DTYPE_CODES[h.dtype]);
  dv.setBigUint64(18, BigInt(h.sequenceCount), true);
  dv.setBigUint64(26, BigInt(h.documentCount), true);
  return out;
}

/** Parses and checks the fixed 34-byte header; `file` names the .idx in errors. */
export function decodeIdxHeader(bytes: Uint8Array, file: string): IdxHeader {
  if (bytes.byteLength < IDX_HEADER_BYTES) {
    throw new Error(`${file}: file is ${bytes.byteLength} bytes, shorter than the ${IDX_HEADER_BYTES}-byte MMIDIDX header`);
  }
  for (let i = 0; i < IDX_MAGIC.length; i++) {
    if (bytes[i] !== IDX_MAGIC[i]) {
      throw new Error(`${file}: field 'magic' is ${JSON.stringify(Buffer.from(bytes.subarray(0, 9)).toString('latin1'))}, expected "MMIDIDX\\x00\\x00" (not a Megatron mmap index)`);
    }
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, IDX_HEADER_BYTES);
  const version = dv.getBigUint64(9, true);
  if (version !== BigInt(IDX_VERSION)) throw new Error(`${file}: field 'version' is ${version}, expected ${IDX_VERSION}`);
  const code = dv.getUint8(17);
  const dtype = dtypeFromCode(code);
  if (dtype === undefined) throw new Error(`${file}: field 'dtype' has unknown code ${code} (valid codes 1..8)`);
  const seq = dv.getBigUint64(18, true);
  const doc = dv.getBigUint64(26, true);
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  if (seq > max) throw new Error(`${file}: field 'sequence_count' is ${seq}, too large`);
  if (doc > max) throw new Error(`${file}: field 'document_count' is ${doc}, too large`);
  return { dtype, sequenceCount: Number(seq), documentCount: Number(doc) };
}

/** Size in bytes of an .idx with these counts (without multimodal sequence modes). */
export function idxByteLength(sequenceCount: number, documentCount: number): number {
  return IDX_HEADER_BYTES + sequenceCount * 4 + sequenceCount * 8 + documentCount * 8;
}
