// Per-file checksums for checkpoints. A writer feeds each buffer it writes to a
// ChecksumBuilder (one CRC-32C pass over bytes already in memory, no second read of
// the file); the builder records one CRC per named byte range (the header, each
// tensor, each block of embedding rows) and folds them into the whole file's CRC with
// crc32cCombine. A reader re-computes the ranges in file order and names the first
// one that differs, so a mismatch says which tensor or rows are damaged.
import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { nativeChecksum } from '../backend/native-checksum.js';
import { crc32cReference } from '../backend/reference/checksum.js';

/** Native for anything but tiny buffers (the koffi call costs more than 64 bytes of table lookups). */
export function crc32c(p: Uint8Array, crc = 0): number {
  const k = p.length >= 64 ? nativeChecksum() : null;
  return k ? k.crc32c(crc, p, p.length) >>> 0 : crc32cReference(crc, p);
}

const POLY = 0x82f63b78;

function gf2Times(mat: Uint32Array, vec: number): number {
  let sum = 0;
  for (let i = 0; vec !== 0; i++, vec >>>= 1) if (vec & 1) sum ^= mat[i]!;
  return sum >>> 0;
}

function gf2Square(square: Uint32Array, mat: Uint32Array): void {
  for (let n = 0; n < 32; n++) square[n] = gf2Times(mat, mat[n]!);
}

/** CRC of A||B from crc(A), crc(B) and |B| (zlib's crc32_combine, for the Castagnoli polynomial). */
export function crc32cCombine(crc1: number, crc2: number, len2: number): number {
  if (len2 <= 0) return crc1 >>> 0;
  const even = new Uint32Array(32), odd = new Uint32Array(32);
  odd[0] = POLY;
  for (let n = 1, row = 1; n < 32; n++, row <<= 1) odd[n] = row;
  gf2Square(even, odd);
  gf2Square(odd, even);
  let c = crc1 >>> 0;
  let len = len2;
  for (;;) {
    gf2Square(even, odd);
    if (len % 2) c = gf2Times(even, c);
    len = Math.floor(len / 2);
    if (len === 0) break;
    gf2Square(odd, even);
    if (len % 2) c = gf2Times(odd, c);
    len = Math.floor(len / 2);
    if (len === 0) break;
  }
  return (c ^ crc2) >>> 0;
}

export interface ChecksumRange {
  /** What the bytes hold: a tensor key, '(header)', 'group 0 rows [0, 1024)', ... */
  name: string;
  /** Byte range within the file. */
  begin: number;
  end: number;
  crc32c: number;
}

export interface FileChecksum {
  algo: 'crc32c';
  bytes: number;
  crc32c: number;
  ranges: ChecksumRange[];
}

/** Accumulates a file's checksum from the buffers written to it, in order. */
export class ChecksumBuilder {
  private off = 0;
  private crc = 0;
  private ranges: ChecksumRange[] = [];

  /** Appends bytes that belong to `name`; consecutive calls with the same name extend one range. */
  add(name: string, bytes: Uint8Array): void {
    const c = crc32c(bytes);
    const last = this.ranges[this.ranges.length - 1];
    if (last && last.name === name && last.end === this.off) {
      last.crc32c = crc32cCombine(last.crc32c, c, bytes.byteLength);
      last.end += bytes.byteLength;
    } else {
      this.ranges.push({ name, begin: this.off, end: this.off + bytes.byteLength, crc32c: c });
    }
    this.crc = crc32cCombine(this.crc, c, bytes.byteLength);
    this.off += bytes.byteLength;
  }

  finish(): FileChecksum {
    return { algo: 'crc32c', bytes: this.off, crc32c: this.crc, ranges: this.ranges };
  }
}

export class ChecksumError extends Error {
  /** `range`: the first damaged range, described (null when the whole file is gone or unreadable). */
  constructor(readonly file: string, readonly range: string | null, message: string) {
    super(message);
    this.name = 'ChecksumError';
  }
}

/**
 * Checks a file against its recorded checksum; throws a ChecksumError naming the file
 * and the first damaged range (described by `describe`, default: the range's name).
 */
export function verifyFile(path: string, fc: FileChecksum, describe: (r: ChecksumRange) => string = (r) => r.name,
  only?: (r: ChecksumRange) => boolean): void {
  if (!existsSync(path)) {
    throw new ChecksumError(path, null, `${path}: file is missing (it held ${fc.ranges.filter((r) => r.end > r.begin).slice(0, 3).map(describe).join(', ')}${fc.ranges.length > 3 ? ', ...' : ''})`);
  }
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size !== fc.bytes) {
      const first = fc.ranges.find((r) => r.end > size);
      throw new ChecksumError(path, first ? describe(first) : null,
        `${path}: ${size} bytes, the manifest records ${fc.bytes} (truncated or overwritten)${first ? `; first damaged: ${describe(first)} (bytes ${first.begin}..${first.end})` : ''}`);
    }
    const buf = Buffer.allocUnsafe(Math.min(8 << 20, Math.max(1, ...fc.ranges.map((r) => r.end - r.begin))));
    let whole = 0;
    for (const r of fc.ranges) {
      if (only && !only(r)) continue;
      let c = 0;
      for (let at = r.begin; at < r.end;) {
        const want = Math.min(buf.byteLength, r.end - at);
        const got = readSync(fd, buf, 0, want, at);
        if (got <= 0) throw new ChecksumError(path, describe(r), `${path}: read failed at byte ${at} (${describe(r)})`);
        c = crc32c(buf.subarray(0, got), c);
        at += got;
      }
      if (c !== r.crc32c) {
        throw new ChecksumError(path, describe(r), `${path}: checksum mismatch in ${describe(r)} (bytes ${r.begin}..${r.end}: crc32c ${hex(c)}, manifest ${hex(r.crc32c)}); the file is corrupted`);
      }
      whole = crc32cCombine(whole, c, r.end - r.begin);
    }
    if (!only && whole !== fc.crc32c) throw new ChecksumError(path, null, `${path}: file checksum ${hex(whole)} != manifest ${hex(fc.crc32c)} (manifest inconsistent)`);
  } finally {
    closeSync(fd);
  }
}

/** verifyFile for a file already read into memory (one read serves both the check and the load). */
export function verifyBytes(path: string, bytes: Uint8Array, fc: FileChecksum, describe: (r: ChecksumRange) => string = (r) => r.name): void {
  if (bytes.byteLength !== fc.bytes) {
    const first = fc.ranges.find((r) => r.end > bytes.byteLength);
    throw new ChecksumError(path, first ? describe(first) : null,
      `${path}: ${bytes.byteLength} bytes, the manifest records ${fc.bytes} (truncated or overwritten)${first ? `; first damaged: ${describe(first)} (bytes ${first.begin}..${first.end})` : ''}`);
  }
  let whole = 0;
  for (const r of fc.ranges) {
    const c = crc32c(bytes.subarray(r.begin, r.end));
    if (c !== r.crc32c) {
      throw new ChecksumError(path, describe(r), `${path}: checksum mismatch in ${describe(r)} (bytes ${r.begin}..${r.end}: crc32c ${hex(c)}, manifest ${hex(r.crc32c)}); the file is corrupted`);
    }
    whole = crc32cCombine(whole, c, r.end - r.begin);
  }
  if (whole !== fc.crc32c) throw new ChecksumError(path, null, `${path}: file checksum ${hex(whole)} != manifest ${hex(fc.crc32c)} (manifest inconsistent)`);
}

const hex = (c: number): string => c.toString(16).padStart(8, '0');
