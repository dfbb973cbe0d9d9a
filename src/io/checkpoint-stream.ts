// A rank's checkpoint shard written in pieces: segments whose bytes are not in memory
// (disk-offloaded optimizer moments, parallel/offload-optimizer.ts) are read through
// one bounded scratch buffer while the file is written, so saving never needs the
// rank's optimizer state resident. The file is the same safetensors layout as
// safetensors.ts writes (8-byte header length, space-padded JSON header, data by
// descending element size in segment order), and its CRC-32C is computed from the
// bytes as they are written, per tensor and for the whole file.
import { atomicWriteStreamSync } from './atomic-write.js';
import { ChecksumBuilder, type FileChecksum } from './checksum.js';
import type { DType, Storage } from '../core/dtype.js';

export interface StreamItem {
  key: string;
  dtype: DType;
  length: number;
  /** Bytes in memory, or null when `read` provides them. */
  data: Storage | null;
  /** Fills `out` with elements [start, start + out.length) of this item. */
  read?: (start: number, out: Float32Array) => void;
}

const ST: Record<DType, { name: string; bytes: number }> = {
  float64: { name: 'F64', bytes: 8 }, float32: { name: 'F32', bytes: 4 }, int32: { name: 'I32', bytes: 4 }, bfloat16: { name: 'BF16', bytes: 2 }, float16: { name: 'F16', bytes: 2 },
};

/** Elements per piece read from a streamed segment (4 MiB). */
const PIECE = 1 << 20;

export function writeSafetensorsStreamed(path: string, items: readonly StreamItem[]): FileChecksum {
  const order = items.map((it, i) => ({ it, i })).sort((a, b) => ST[b.it.dtype].bytes - ST[a.it.dtype].bytes || a.i - b.i);
  const offsets = new Map<string, [number, number]>();
  let off = 0;
  for (const { it } of order) {
    const n = it.length * ST[it.dtype].bytes;
    offsets.set(it.key, [off, off + n]);
    off += n;
  }
  const header: Record<string, unknown> = {};
  for (const it of items) header[it.key] = { dtype: ST[it.dtype].name, shape: [it.length], data_offsets: offsets.get(it.key) };
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(json.byteLength), true);

  const sum = new ChecksumBuilder();
  atomicWriteStreamSync(path, (write) => {
    const put = (name: string, b: Uint8Array) => { sum.add(name, b); write(b); };
    put('(header)', len);
    put('(header)', new Uint8Array(json.buffer, json.byteOffset, json.byteLength));
    let scratch: Float32Array | null = null;
    for (const { it } of order) {
      if (it.data) { put(it.key, new Uint8Array(it.data.buffer, it.data.byteOffset, it.data.byteLength)); continue; }
      if (!it.read || it.dtype !== 'float32') throw new Error(`checkpoint: segment ${it.key} has neither data nor a float32 reader`);
      scratch ??= new Float32Array(PIECE);
      for (let s = 0; s < it.length; s += PIECE) {
        const piece = scratch.subarray(0, Math.min(PIECE, it.length - s));
        it.read(s, piece);
        put(it.key, new Uint8Array(piece.buffer, piece.byteOffset, piece.byteLength));
      }
    }
  });
  return sum.finish();
}
