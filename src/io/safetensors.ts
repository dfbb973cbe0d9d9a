// The safetensors format (https://github.com/huggingface/safetensors), read and
// written exactly: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
// (padded with spaces so the data starts 8-byte aligned), then the data section.
// Each header entry is {dtype, shape, data_offsets: [begin, end]} with offsets
// relative to the data section; "__metadata__" is an optional string→string map.
// As in the reference implementation, the entries must tile the data section
// exactly: no gaps, no overlaps, no trailing bytes.
//
// Reading into Tensors: F32/F64/I32 map to float32/float64/int32; BF16 and F16 stay
// 16-bit (Uint16Array storage, dtype bfloat16/float16). Athanor tensors have no
// 64-bit integers, so I64/U64/U32 become int32 after a range check that names the
// tensor and element; I16/I8/U16/U8/BOOL widen to int32. readRaw() returns any dtype
// as its natural typed array (BigInt64Array for I64) without conversion.
//
// SafetensorsReader reads only the header on open and each tensor's byte range on
// request (positioned reads), so one tensor of a large file costs only its bytes.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { fromStorage, forEachIndex, type Tensor } from '../core/tensor.js';
import type { DType, Storage } from '../core/dtype.js';
import { checkShape, numel, shapeStr } from '../core/layout.js';
import { atomicWriteFile, atomicWriteFileSync } from './atomic-write.js';
import { ChecksumBuilder, type FileChecksum } from './checksum.js';

export type SafetensorsDType =
  | 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8'
  | 'U64' | 'U32' | 'U16' | 'U8' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';

export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};

/** The reference implementation's limit; larger headers are corrupt or hostile. */
export const MAX_HEADER_BYTES = 100_000_000;

const TO_SAFETENSORS: Record<DType, SafetensorsDType> = { float32: 'F32', float64: 'F64', int32: 'I32', bfloat16: 'BF16', float16: 'F16' };

export interface SafetensorsEntry {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  /** Byte range within the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Entries in header order. */
  entries: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
  headerBytes: number;
  /** File offset of the data section (8 + headerBytes). */
  dataStart: number;
}

/** A tensor in a dtype Athanor tensors lack (I64, U8, ...), or plain state arrays. */
export interface RawTensor {
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: ArrayBufferView;
}

export type WritableTensor = Tensor | RawTensor;
export type TensorMap = ReadonlyMap<string, WritableTensor> | Readonly<Record<string, WritableTensor>>;

export type RawArray = Float64Array | Float32Array | Uint16Array | BigInt64Array | BigUint64Array | Int32Array
  | Uint32Array | Int16Array | Int8Array | Uint8Array;

function checkHost(): void {
  if (endianness() !== 'LE') throw new Error('safetensors: big-endian hosts are not supported');
}

function isRaw(t: WritableTensor): t is RawTensor {
  return !('box' in t);
}

function asBytes(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function tensorBytes(name: string, t: WritableTensor, where: string): { dtype: SafetensorsDType; shape: number[]; bytes: Uint8Array } {
  if (isRaw(t)) {
    if (!(t.dtype in SAFETENSORS_DTYPE_BYTES)) throw new Error(`${where}: tensor '${name}': unknown dtype '${t.dtype}'`);
    checkShape(t.shape, `${where}: tensor '${name}'`);
    const need = numel(t.shape) * SAFETENSORS_DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== need) {
      throw new Error(`${where}: tensor '${name}': ${t.data.byteLength} bytes of data, shape ${shapeStr(t.shape)} of ${t.dtype} needs ${need}`);
    }
    return { dtype: t.dtype, shape: [...t.shape], bytes: asBytes(t.data) };
  }
  const dtype = TO_SAFETENSORS[t.dtype];
  const data = t.data;
  if (t.isContiguous()) return { dtype, shape: [...t.shape], bytes: asBytes(data.subarray(t.offset, t.offset + t.size)) };
  const copy = new (data.constructor as new (n: number) => Storage)(t.size);
  forEachIndex(t.shape, t.strides, t.offset, (src, i) => { copy[i] = data[src]!; });
  return { dtype, shape: [...t.shape], bytes: asBytes(copy) };
}

/**
 * The file's bytes as chunks (header, then each tensor's data, no copies of
 * contiguous tensors). Data is laid out by descending element size so every tensor
 * is aligned to its element size within the file, as the reference writer does.
 */
export function encodeSafetensors(tensors: TensorMap, metadata?: Readonly<Record<string, string>>, where = 'safetensors'): Uint8Array[] {
  return encodeSafetensorsNamed(tensors, metadata, where).chunks;
}

/** encodeSafetensors, with what each chunk holds ('(header)' or the tensor's name), for checksums. */
export function encodeSafetensorsNamed(tensors: TensorMap, metadata?: Readonly<Record<string, string>>, where = 'safetensors'): { chunks: Uint8Array[]; names: string[] } {
  checkHost();
  const items = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)) as [string, WritableTensor][];
  const enc = items.map(([name, t], i) => {
    if (name === '__metadata__') throw new Error(`${where}: '__metadata__' is reserved and cannot name a tensor`);
    return { name, i, ...tensorBytes(name, t, where) };
  });
  const order = [...enc].sort((a, b) => SAFETENSORS_DTYPE_BYTES[b.dtype] - SAFETENSORS_DTYPE_BYTES[a.dtype] || a.i - b.i);
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`${where}: metadata '${k}' must be a string (got ${typeof v})`);
    }
    header.__metadata__ = { ...metadata };
  }
  let off = 0;
  const offsets = new Map<string, [number, number]>();
  for (const e of order) {
    offsets.set(e.name, [off, off + e.bytes.byteLength]);
    off += e.bytes.byteLength;
  }
  for (const e of enc) header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: offsets.get(e.name) };
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  return { chunks: [len, json, ...order.map((e) => e.bytes)], names: ['(header)', '(header)', ...order.map((e) => e.name)] };
}

/** Writes a safetensors file atomically (temporary file, fsync, rename). */
export function writeSafetensors(path: string, tensors: TensorMap, metadata?: Readonly<Record<string, string>>): void {
  atomicWriteFileSync(path, encodeSafetensors(tensors, metadata, path));
}

/** writeSafetensors that also returns the file's checksum, computed from the buffers as they are written. */
export function writeSafetensorsChecksummed(path: string, tensors: TensorMap, metadata?: Readonly<Record<string, string>>): FileChecksum {
  const { chunks, names } = encodeSafetensorsNamed(tensors, metadata, path);
  const sum = new ChecksumBuilder();
  chunks.forEach((c, i) => sum.add(names[i]!, c));
  atomicWriteFileSync(path, chunks);
  return sum.finish();
}

export async function writeSafetensorsAsync(path: string, tensors: TensorMap, metadata?: Readonly<Record<string, string>>): Promise<void> {
  await atomicWriteFile(path, encodeSafetensors(tensors, metadata, path));
}

function isSize(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Parses and validates the JSON header against a data section of `dataBytes` bytes. */
export function parseSafetensorsHeader(json: Uint8Array, dataBytes: number, where: string): SafetensorsHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(json));
  } catch (e) {
    throw new Error(`${where}: header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error(`${where}: header is not a JSON object`);
  const entries = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${where}: '__metadata__' is not an object`);
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== 'string') throw new Error(`${where}: '__metadata__' value '${k}' is not a string`);
      }
      metadata = { ...(raw as Record<string, string>) };
      continue;
    }
    const at = `${where}: tensor '${name}'`;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${at}: entry is not an object`);
    const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPE_BYTES)) throw new Error(`${at}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isSize)) throw new Error(`${at}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offs) || offs.length !== 2 || !isSize(offs[0]) || !isSize(offs[1]) || offs[0] > offs[1]) {
      throw new Error(`${at}: data_offsets ${JSON.stringify(offs)} is not [begin, end] with 0 <= begin <= end`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataBytes) throw new Error(`${at}: data_offsets [${begin}, ${end}] run past the data section (${dataBytes} bytes; file truncated?)`);
    const need = numel(shape as number[]) * SAFETENSORS_DTYPE_BYTES[dtype as SafetensorsDType];
    if (end - begin !== need) {
      throw new Error(`${at}: data_offsets [${begin}, ${end}] hold ${end - begin} bytes but shape ${shapeStr(shape as number[])} of ${dtype} needs ${need}`);
    }
    entries.set(name, { name, dtype: dtype as SafetensorsDType, shape: [...(shape as number[])], begin, end });
  }
  const sorted = [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  let prev: SafetensorsEntry | null = null;
  for (const e of sorted) {
    if (e.begin < pos) throw new Error(`${where}: tensor '${e.name}' data_offsets [${e.begin}, ${e.end}] overlap tensor '${prev!.name}' [${prev!.begin}, ${prev!.end}]`);
    if (e.begin > pos) throw new Error(`${where}: tensor '${e.name}' starts at ${e.begin}, leaving a gap after byte ${pos} of the data section`);
    pos = e.end;
    prev = e;
  }
  if (pos !== dataBytes) throw new Error(`${where}: tensors cover ${pos} bytes but the data section has ${dataBytes} (trailing bytes)`);
  return { entries, metadata, headerBytes: json.byteLength, dataStart: 8 + json.byteLength };
}

/** Positioned reads from a file or from bytes in memory. */
interface ByteSource {
  size: number;
  readInto(dst: Uint8Array, position: number): void;
  close(): void;
}

function fileSource(path: string): ByteSource {
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  return {
    size,
    readInto(dst, position) {
      const CHUNK = 1 << 30; // one read() moves at most ~2 GiB
      let done = 0;
      while (done < dst.byteLength) {
        const n = readSync(fd, dst, done, Math.min(CHUNK, dst.byteLength - done), position + done);
        if (n === 0) throw new Error(`${path}: unexpected end of file at byte ${position + done}`);
        done += n;
      }
    },
    close() { closeSync(fd); },
  };
}

function memorySource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.byteLength,
    readInto(dst, position) { dst.set(bytes.subarray(position, position + dst.byteLength)); },
    close() { /* nothing to release */ },
  };
}

export class SafetensorsReader {
  readonly header: SafetensorsHeader;
  private closed = false;

  private constructor(private readonly src: ByteSource, readonly where: string) {
    checkHost();
    try {
      this.header = readHeader(src, where);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Opens a file and reads only its header. close() when done. */
  static open(path: string): SafetensorsReader {
    return new SafetensorsReader(fileSource(path), path);
  }

  /** A reader over a complete file held in memory. */
  static fromBytes(bytes: Uint8Array, where = '<buffer>'): SafetensorsReader {
    return new SafetensorsReader(memorySource(bytes), where);
  }

  get metadata(): Record<string, string> {
    return this.header.metadata;
  }

  names(): string[] {
    return [...this.header.entries.keys()];
  }

  has(name: string): boolean {
    return this.header.entries.has(name);
  }

  entry(name: string): SafetensorsEntry {
    const e = this.header.entries.get(name);
    if (!e) throw new Error(`${this.where}: no tensor '${name}' (the file has ${this.header.entries.size}: ${this.names().slice(0, 8).join(', ')}${this.header.entries.size > 8 ? ', ...' : ''})`);
    return e;
  }

  /** The tensor's bytes in a fresh, aligned buffer. */
  readBytes(name: string): Uint8Array {
    if (this.closed) throw new Error(`${this.where}: reader is closed`);
    const e = this.entry(name);
    const out = new Uint8Array(new ArrayBuffer(e.end - e.begin));
    this.src.readInto(out, this.header.dataStart + e.begin);
    return out;
  }

  /** The tensor as its natural typed array, unconverted (BigInt64Array for I64, Uint8Array for BOOL/F8). */
  readRaw(name: string): { dtype: SafetensorsDType; shape: number[]; data: RawArray } {
    const e = this.entry(name);
    const b = this.readBytes(name).buffer;
    const data: RawArray = (() => {
      switch (e.dtype) {
        case 'F64': return new Float64Array(b);
        case 'F32': return new Float32Array(b);
        case 'F16': case 'BF16': case 'U16': return new Uint16Array(b);
        case 'I64': return new BigInt64Array(b);
        case 'U64': return new BigUint64Array(b);
        case 'I32': return new Int32Array(b);
        case 'U32': return new Uint32Array(b);
        case 'I16': return new Int16Array(b);
        case 'I8': return new Int8Array(b);
        default: return new Uint8Array(b);
      }
    })();
    return { dtype: e.dtype, shape: [...e.shape], data };
  }

  /** The tensor as an Athanor Tensor (see the file comment for the dtype mapping). */
  read(name: string): Tensor {
    const { dtype, shape, data } = this.readRaw(name);
    const at = `${this.where}: tensor '${name}'`;
    let t: Tensor;
    switch (dtype) {
      case 'F32': t = fromStorage(data as Float32Array, shape, 'float32'); break;
      case 'F64': t = fromStorage(data as Float64Array, shape, 'float64'); break;
      case 'I32': t = fromStorage(data as Int32Array, shape, 'int32'); break;
      case 'BF16': t = fromStorage(data as Uint16Array, shape, 'bfloat16'); break;
      case 'F16': t = fromStorage(data as Uint16Array, shape, 'float16'); break;
      case 'I64': case 'U64': case 'U32': {
        const out = new Int32Array(data.length);
        for (let i = 0; i < data.length; i++) {
          const v = Number(data[i]!);
          if (v < -2147483648 || v > 2147483647) throw new Error(`${at}: ${dtype} value ${data[i]} at element ${i} does not fit int32`);
          out[i] = v;
        }
        t = fromStorage(out, shape, 'int32');
        break;
      }
      case 'I16': case 'I8': case 'U16': case 'U8': case 'BOOL':
        t = fromStorage(Int32Array.from(data as ArrayLike<number>), shape, 'int32');
        break;
      default:
        throw new Error(`${at}: ${dtype} has no Athanor tensor dtype; use readRaw()`);
    }
    t.name = name;
    return t;
  }

  /** Several tensors (default: all) by name, in header order. */
  readAll(names?: readonly string[]): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const n of names ?? this.names()) out.set(n, this.read(n));
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.src.close();
  }
}

function readHeader(src: ByteSource, where: string): SafetensorsHeader {
  if (src.size < 8) throw new Error(`${where}: file is ${src.size} bytes, too short for the 8-byte header length`);
  const lenBytes = new Uint8Array(8);
  src.readInto(lenBytes, 0);
  const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new Error(`${where}: header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt file?)`);
  if (n > BigInt(src.size - 8)) throw new Error(`${where}: header length ${n} runs past the end of the ${src.size}-byte file (truncated?)`);
  const json = new Uint8Array(Number(n));
  src.readInto(json, 8);
  return parseSafetensorsHeader(json, src.size - 8 - Number(n), where);
}

/** Reads tensors (default: all) and metadata from a file; only the requested ranges are read. */
export function readSafetensors(path: string, names?: readonly string[]): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const r = SafetensorsReader.open(path);
  try {
    return { tensors: r.readAll(names), metadata: r.metadata };
  } finally {
    r.close();
  }
}

/** Decodes a complete safetensors file held in memory. */
export function decodeSafetensors(bytes: Uint8Array, where = '<buffer>'): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const r = SafetensorsReader.fromBytes(bytes, where);
  return { tensors: r.readAll(), metadata: r.metadata };
}
