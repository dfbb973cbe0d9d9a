// Binary protocol between embedding clients and servers (TCP, little-endian).
//
// Frame = 16-byte header + payload:
//   u32 magic 'ATEM' | u8 version | u8 type | u16 flags | u32 requestId | u32 payloadLength
// flags: 0, or FRAME_SHM on LOOKUP/PUSH requests and LOOKUP answers whose payload lives in
// the connection's shared-memory region (shm-region.ts, SHM_ATTACH): the frame then carries
// only where (see encodeShmDescriptor), and the bytes there are the payload described below.
// A response carries the request's id and type | 0x80; failures come back as ERROR
// (utf-8 message). The first frame on a connection must be AUTH with the shared
// token, otherwise the server closes the connection. Payload lengths are checked
// against a maximum before anything is buffered.
//
// Hot-path payloads (ids are u64 = (lo, hi) uint32 pairs; every array starts 8-aligned
// within the payload, and payloads are received into fresh buffers, so typed-array
// views need no copy):
//   LOOKUP       u16 group | u8 wire dtype | u8 flags (1 = read-only) | u32 n | u64 ids[n]
//                (with flag 2 = with state: then u8 mask[n] | pad to 8: ids whose optimizer state is wanted)
//   LOOKUP resp  u16 group | u8 wire dtype | u8 0 | u32 n | u32 dim | u32 sw | rows[n*dim] | pad to 8 | f32 state[m*sw]
//                (sw = 0 unless the lookup asked for optimizer state; then m = masked ids, in
//                request order: the trainer replays its own in-flight gradients on those rows)
//   PUSH         u16 group | u8 wire dtype | u8 flags (1 = advance step) | u32 n | u64 ids[n] | grads[n*dim]
//   PUSH resp    u32 applied | u32 dropped | f64 server step
// Admin payloads (AUTH reply, STATS, DUMP, LOAD, SET_CONFIG) are JSON: they are rare.
import { createHash, timingSafeEqual } from 'node:crypto';
import { f16ToF32, f32ToF16 } from '../core/dtype.js';
import { ChunkQueue } from './chunk-queue.js';

export const MAGIC = 0x4d455441; // bytes 'A','T','E','M'
export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 16;
/** Largest frame accepted before authentication (the AUTH frame itself). */
export const PRE_AUTH_MAX_PAYLOAD = 4096;

export const MsgType = {
  AUTH: 1, LOOKUP: 2, PUSH: 3, STATS: 4, DUMP: 5, LOAD: 6, SET_CONFIG: 7, PING: 8,
  /** JSON {pid, fd, bytes, nonce}: map the client's shared-memory region (same host only). */
  SHM_ATTACH: 9,
  ERROR: 0x7f,
} as const;
export const RESPONSE = 0x80;

export type WireDType = 'float32' | 'float16' | 'bfloat16';
const WIRE_CODES: Record<WireDType, number> = { float32: 0, float16: 1, bfloat16: 2 };
const WIRE_NAMES: WireDType[] = ['float32', 'float16', 'bfloat16'];
export const LOOKUP_READ_ONLY = 1;
/** A mask byte per id follows the ids; the answer carries the masked rows' optimizer state (float32) after the rows. */
export const LOOKUP_WITH_STATE = 2;
export const PUSH_ADVANCE_STEP = 1;
/** Header flag: the payload is in the connection's shared-memory region. */
export const FRAME_SHM = 1;

export function wireCode(d: WireDType): number {
  const c = WIRE_CODES[d];
  if (c === undefined) throw new Error(`protocol: unknown wire dtype '${d}' (expected float32, float16 or bfloat16)`);
  return c;
}
export function wireName(code: number): WireDType {
  const n = WIRE_NAMES[code];
  if (!n) throw new ProtocolError(`unknown wire dtype code ${code}`);
  return n;
}
export function wireBytes(d: WireDType): number { return d === 'float32' ? 4 : 2; }

/** A frame or payload that does not follow the protocol. */
export class ProtocolError extends Error {}

export interface FrameHeader { type: number; requestId: number; length: number; flags: number }

export function writeHeader(dst: Uint8Array, type: number, requestId: number, length: number, flags = 0): void {
  const v = new DataView(dst.buffer, dst.byteOffset, HEADER_BYTES);
  v.setUint32(0, MAGIC, true);
  v.setUint8(4, PROTOCOL_VERSION);
  v.setUint8(5, type);
  v.setUint16(6, flags, true);
  v.setUint32(8, requestId >>> 0, true);
  v.setUint32(12, length >>> 0, true);
}

export function readHeader(src: Uint8Array, maxPayload: number): FrameHeader {
  const v = new DataView(src.buffer, src.byteOffset, HEADER_BYTES);
  if (v.getUint32(0, true) !== MAGIC) throw new ProtocolError('bad magic');
  if (v.getUint8(4) !== PROTOCOL_VERSION) throw new ProtocolError(`unsupported protocol version ${v.getUint8(4)}`);
  const length = v.getUint32(12, true);
  if (length > maxPayload) throw new ProtocolError(`payload of ${length} bytes exceeds the limit of ${maxPayload}`);
  return { type: v.getUint8(5), requestId: v.getUint32(8, true), length, flags: v.getUint16(6, true) };
}

/** Frame with an uninitialised payload of `length` bytes at offset HEADER_BYTES (8-aligned). */
export function allocFrame(type: number, requestId: number, length: number, flags = 0): Buffer {
  const b = Buffer.allocUnsafeSlow(HEADER_BYTES + length);
  writeHeader(b, type, requestId, length, flags);
  return b;
}

/** Where a shared-memory payload is: request bytes [reqOff, reqOff+reqLen), answer room [respOff, respOff+respCap). */
export interface ShmDescriptor { reqOff: number; reqLen: number; respOff: number; respCap: number }

/** A FRAME_SHM request frame: 16 bytes of descriptor instead of the payload. */
export function encodeShmRequest(type: number, requestId: number, d: ShmDescriptor): Buffer {
  const f = allocFrame(type, requestId, 16, FRAME_SHM);
  f.writeUInt32LE(d.reqOff, HEADER_BYTES);
  f.writeUInt32LE(d.reqLen, HEADER_BYTES + 4);
  f.writeUInt32LE(d.respOff, HEADER_BYTES + 8);
  f.writeUInt32LE(d.respCap, HEADER_BYTES + 12);
  return f;
}

/** Parses a FRAME_SHM descriptor and checks it against the region (`regionBytes`): both ranges inside, 8-aligned, disjoint. */
export function decodeShmDescriptor(payload: Uint8Array, regionBytes: number): ShmDescriptor {
  if (payload.byteLength !== 16) throw new ProtocolError(`shared-memory descriptor: payload must be 16 bytes (got ${payload.byteLength})`);
  const v = new DataView(payload.buffer, payload.byteOffset, 16);
  const d = { reqOff: v.getUint32(0, true), reqLen: v.getUint32(4, true), respOff: v.getUint32(8, true), respCap: v.getUint32(12, true) };
  const inside = (o: number, n: number): boolean => o % 8 === 0 && o + n <= regionBytes;
  if (!inside(d.reqOff, d.reqLen) || !inside(d.respOff, d.respCap)) throw new ProtocolError(`shared-memory descriptor: range outside the ${regionBytes}-byte region or not 8-aligned`);
  if (d.reqOff < d.respOff + d.respCap && d.respOff < d.reqOff + d.reqLen) throw new ProtocolError('shared-memory descriptor: request and answer ranges overlap');
  return d;
}

export function encodeFrame(type: number, requestId: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const b = allocFrame(type, requestId, payload.byteLength);
  b.set(payload, HEADER_BYTES);
  return b;
}

export function encodeJsonFrame(type: number, requestId: number, obj: unknown): Buffer {
  return encodeFrame(type, requestId, Buffer.from(JSON.stringify(obj), 'utf8'));
}

export function decodeJson(payload: Uint8Array, what: string): unknown {
  try {
    return payload.byteLength === 0 ? {} : JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    throw new ProtocolError(`${what}: payload is not valid JSON`);
  }
}

export function encodeErrorFrame(requestId: number, message: string): Buffer {
  return encodeFrame(MsgType.ERROR | RESPONSE, requestId, Buffer.from(message.slice(0, 4000), 'utf8'));
}

/**
 * Reassembles frames from a byte stream. Payloads are copied into ArrayBuffers at
 * offset 0, so their contents can be viewed as typed arrays: fresh ones, or with
 * `reuse` one buffer per reader, overwritten by the next frame (for a reader whose
 * onFrame is done with the payload when it returns, as the server's is: no allocation,
 * page faults or garbage per request).
 */
export class FrameReader {
  private readonly pending = new ChunkQueue();
  private header: FrameHeader | null = null;
  private readonly hdrBuf = new Uint8Array(HEADER_BYTES);
  private scratch = new ArrayBuffer(0);

  constructor(public maxPayload: number, private readonly reuse = false) {}

  /** Feeds bytes; calls onFrame per complete frame. Throws ProtocolError on a bad header. */
  push(chunk: Buffer, onFrame: (h: FrameHeader, payload: Uint8Array) => void): void {
    this.pending.push(chunk);
    for (;;) {
      if (!this.header) {
        if (this.pending.length < HEADER_BYTES) return;
        this.pending.take(this.hdrBuf);
        this.header = readHeader(this.hdrBuf, this.maxPayload);
      }
      if (this.pending.length < this.header.length) return;
      const h = this.header;
      let payload: Uint8Array;
      if (this.reuse) {
        if (this.scratch.byteLength < h.length) this.scratch = new ArrayBuffer(Math.max(h.length, Math.min(this.maxPayload, 2 * this.scratch.byteLength)));
        payload = new Uint8Array(this.scratch, 0, h.length);
      } else payload = new Uint8Array(Buffer.allocUnsafeSlow(h.length).buffer, 0, h.length);
      this.pending.take(payload);
      this.header = null;
      onFrame(h, payload);
    }
  }
}

// ---- row codecs ---------------------------------------------------------------

let f16Table: Float32Array | null = null;
function f16Decode(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16ToF32(h);
  }
  return f16Table;
}

/** Encodes src[0..n) as `d` into dst (a byte view; 4-aligned for float32, 2-aligned otherwise). */
export function encodeValues(d: WireDType, src: Float32Array, n: number, dst: Uint8Array): void {
  if (d === 'float32') {
    dst.set(new Uint8Array(src.buffer, src.byteOffset, 4 * n));
    return;
  }
  const out = new Uint16Array(dst.buffer, dst.byteOffset, n);
  if (d === 'bfloat16') {
    // Round to nearest even, NaN kept quiet: the same bits as f32ToBf16 in core/dtype.
    const u = new Uint32Array(src.buffer, src.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const x = u[i]!;
      out[i] = (x & 0x7fffffff) > 0x7f800000 ? ((x >>> 16) | 0x40) & 0xffff : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
    }
    return;
  }
  for (let i = 0; i < n; i++) out[i] = f32ToF16(src[i]!);
}

/** Decodes n values of dtype `d` from src (byte view) into dst[dstOff ..). */
export function decodeValues(d: WireDType, src: Uint8Array, n: number, dst: Float32Array, dstOff = 0): void {
  if (d === 'float32') {
    new Uint8Array(dst.buffer, dst.byteOffset + 4 * dstOff, 4 * n).set(src.subarray(0, 4 * n));
    return;
  }
  const h = new Uint16Array(src.buffer, src.byteOffset, n);
  if (d === 'bfloat16') {
    const u = new Uint32Array(dst.buffer, dst.byteOffset + 4 * dstOff, n);
    for (let i = 0; i < n; i++) u[i] = h[i]! << 16;
    return;
  }
  const t = f16Decode();
  for (let i = 0; i < n; i++) dst[dstOff + i] = t[h[i]!]!;
}

// ---- hot-path messages ----------------------------------------------------------

export interface IdRequest {
  group: number;
  dtype: WireDType;
  flags: number;
  count: number;
  /** (lo, hi) pairs, a view into the payload. */
  ids: Uint32Array;
  /** PUSH only: the encoded gradients (count * dim values), a view into the payload. */
  values: Uint8Array;
}

/** Payload bytes of a LOOKUP (grads absent) or PUSH request for `count` ids. */
export function idRequestBytes(count: number, dtype: WireDType, gradDim: number, withMask: boolean): number {
  return 8 + 8 * count + (gradDim > 0 ? count * gradDim * wireBytes(dtype) : withMask ? (count + 7) & ~7 : 0);
}

/** Writes a LOOKUP or PUSH payload for ids[2*start .. 2*(start+count)) into dst (8-aligned, idRequestBytes long). */
export function writeIdRequest(
  dst: Uint8Array, group: number, dtype: WireDType, flags: number,
  ids: Uint32Array, start: number, count: number, grads?: { data: Float32Array; dim: number }, stateMask?: Uint8Array,
): void {
  const len = idRequestBytes(count, dtype, grads ? grads.dim : 0, !!stateMask), vb = len - 8 - 8 * count;
  const v = new DataView(dst.buffer, dst.byteOffset, 8);
  v.setUint16(0, group, true);
  v.setUint8(2, wireCode(dtype));
  v.setUint8(3, flags);
  v.setUint32(4, count, true);
  new Uint32Array(dst.buffer, dst.byteOffset + 8, 2 * count).set(ids.subarray(2 * start, 2 * (start + count)));
  if (grads) {
    const d = grads.dim;
    encodeValues(dtype, grads.data.subarray(start * d, (start + count) * d), count * d, new Uint8Array(dst.buffer, dst.byteOffset + 8 + 8 * count, vb));
  } else if (stateMask) {
    const m = new Uint8Array(dst.buffer, dst.byteOffset + 8 + 8 * count, vb);
    m.fill(0);
    m.set(stateMask.subarray(start, start + count));
  }
}

/** LOOKUP or PUSH frame for ids[2*start .. 2*(start+count)); grads (PUSH) are rows start.. of `grads`. */
export function encodeIdRequest(
  type: number, requestId: number, group: number, dtype: WireDType, flags: number,
  ids: Uint32Array, start: number, count: number, grads?: { data: Float32Array; dim: number }, stateMask?: Uint8Array,
): Buffer {
  const len = idRequestBytes(count, dtype, grads ? grads.dim : 0, !!stateMask);
  const f = allocFrame(type, requestId, len);
  writeIdRequest(new Uint8Array(f.buffer, f.byteOffset + HEADER_BYTES, len), group, dtype, flags, ids, start, count, grads, stateMask);
  return f;
}

/** Parses LOOKUP (dimOrZero = 0, no values) or PUSH (values of count * dim) payloads, checking every length. */
export function decodeIdRequest(payload: Uint8Array, dimOf: (group: number) => number, withValues: boolean): IdRequest {
  if (payload.byteLength < 8) throw new ProtocolError(`id request: payload of ${payload.byteLength} bytes is shorter than its 8-byte header`);
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const group = v.getUint16(0, true);
  const dtype = wireName(v.getUint8(2));
  const flags = v.getUint8(3);
  const count = v.getUint32(4, true);
  const dim = withValues ? dimOf(group) : 0;
  // A lookup with state carries a mask byte per id (padded to 8).
  const want = 8 + 8 * count + (withValues ? count * dim * wireBytes(dtype) : (flags & LOOKUP_WITH_STATE) !== 0 ? (count + 7) & ~7 : 0);
  if (payload.byteLength !== want) throw new ProtocolError(`id request: payload of ${payload.byteLength} bytes, expected ${want} for ${count} ids`);
  if (payload.byteOffset % 8 !== 0) throw new ProtocolError('id request: payload not 8-aligned');
  return {
    group, dtype, flags, count,
    ids: new Uint32Array(payload.buffer, payload.byteOffset + 8, 2 * count),
    values: new Uint8Array(payload.buffer, payload.byteOffset + 8 + 8 * count, want - 8 - 8 * count),
  };
}

export function encodeLookupResponse(requestId: number, group: number, dtype: WireDType, rows: Float32Array, count: number, dim: number): Buffer {
  const r = allocLookupResponse(requestId, group, dtype, count, dim);
  encodeValues(dtype, rows, count * dim, r.values);
  return r.frame;
}

/** Bytes of the row block rounded up to 8, where the optional state block starts. */
function rowBlockBytes(count: number, dim: number, dtype: WireDType): number {
  return (count * dim * wireBytes(dtype) + 7) & ~7;
}

/** Payload bytes of a LOOKUP answer (stateRows state rows of stateWidth floats after the rows). */
export function lookupResponseBytes(dtype: WireDType, count: number, dim: number, stateWidth = 0, stateRows = count): number {
  const sb = stateWidth > 0 ? stateRows * stateWidth * 4 : 0;
  return 16 + (sb > 0 ? rowBlockBytes(count, dim, dtype) : count * dim * wireBytes(dtype)) + sb;
}

/**
 * Lays out a LOOKUP answer payload in dst (8-aligned, lookupResponseBytes long): writes its
 * header and returns the row block for the caller to fill (`values`) and, when
 * stateWidth > 0, the float32 state block (`state`).
 */
export function layoutLookupResponse(dst: Uint8Array, group: number, dtype: WireDType, count: number, dim: number, stateWidth = 0, stateRows = count): { values: Uint8Array; state: Float32Array | null } {
  const vb = count * dim * wireBytes(dtype);
  const sb = stateWidth > 0 ? stateRows * stateWidth * 4 : 0;
  const vbPadded = sb > 0 ? rowBlockBytes(count, dim, dtype) : vb;
  const v = new DataView(dst.buffer, dst.byteOffset, 16);
  v.setUint16(0, group, true);
  v.setUint8(2, wireCode(dtype));
  v.setUint8(3, 0);
  v.setUint32(4, count, true);
  v.setUint32(8, dim, true);
  v.setUint32(12, stateWidth, true);
  if (vbPadded > vb) dst.fill(0, 16 + vb, 16 + vbPadded);
  const state = sb > 0 ? new Float32Array(dst.buffer, dst.byteOffset + 16 + vbPadded, stateRows * stateWidth) : null;
  return { values: new Uint8Array(dst.buffer, dst.byteOffset + 16, vb), state };
}

/**
 * LOOKUP response frame with its row block left for the caller to fill (`values`,
 * 8-aligned) and, when stateWidth > 0, its float32 state block (`state`).
 */
export function allocLookupResponse(requestId: number, group: number, dtype: WireDType, count: number, dim: number, stateWidth = 0, stateRows = count): { frame: Buffer; values: Uint8Array; state: Float32Array | null } {
  const len = lookupResponseBytes(dtype, count, dim, stateWidth, stateRows);
  const f = allocFrame(MsgType.LOOKUP | RESPONSE, requestId, len);
  return { frame: f, ...layoutLookupResponse(new Uint8Array(f.buffer, f.byteOffset + HEADER_BYTES, len), group, dtype, count, dim, stateWidth, stateRows) };
}

export interface LookupResponse { group: number; dtype: WireDType; count: number; dim: number; values: Uint8Array; stateWidth: number; state: Float32Array | null }

export function decodeLookupResponse(payload: Uint8Array): LookupResponse {
  if (payload.byteLength < 16) throw new ProtocolError('lookup response: short payload');
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const dtype = wireName(v.getUint8(2));
  const count = v.getUint32(4, true), dim = v.getUint32(8, true), sw = v.getUint32(12, true);
  const vb = count * dim * wireBytes(dtype);
  const vbPadded = sw > 0 ? rowBlockBytes(count, dim, dtype) : vb;
  const stBytes = payload.byteLength - 16 - vbPadded;
  if (sw === 0 ? stBytes !== 0 : stBytes < 0 || stBytes % (4 * sw) !== 0 || stBytes > count * sw * 4) {
    throw new ProtocolError(`lookup response: payload of ${payload.byteLength} bytes does not fit ${count} rows of ${dim}${sw ? ` and state rows of ${sw}` : ''}`);
  }
  const stOff = payload.byteOffset + 16 + vbPadded;
  // Payloads arrive in fresh buffers (8-aligned starts), so the state view needs no copy; copy if not.
  const state = sw === 0 ? null
    : stOff % 4 === 0 ? new Float32Array(payload.buffer, stOff, stBytes / 4)
      : new Float32Array(payload.slice(16 + vbPadded).buffer);
  return { group: v.getUint16(0, true), dtype, count, dim, values: new Uint8Array(payload.buffer, payload.byteOffset + 16, vb), stateWidth: sw, state };
}

export interface PushResponse { applied: number; dropped: number; step: number }

export function encodePushResponse(requestId: number, r: PushResponse): Buffer {
  const f = allocFrame(MsgType.PUSH | RESPONSE, requestId, 16);
  f.writeUInt32LE(r.applied, HEADER_BYTES);
  f.writeUInt32LE(r.dropped, HEADER_BYTES + 4);
  f.writeDoubleLE(r.step, HEADER_BYTES + 8);
  return f;
}

export function decodePushResponse(payload: Uint8Array): PushResponse {
  if (payload.byteLength !== 16) throw new ProtocolError('push response: payload must be 16 bytes');
  const v = new DataView(payload.buffer, payload.byteOffset, 16);
  return { applied: v.getUint32(0, true), dropped: v.getUint32(4, true), step: v.getFloat64(8, true) };
}

// ---- authentication -------------------------------------------------------------

/** Constant-time token check: both sides are hashed first, so neither length nor content leaks through timing. */
export function tokenMatches(given: Uint8Array, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b) && expected.length > 0;
}
