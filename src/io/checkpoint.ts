// Layout-independent checkpoints. A checkpoint is a directory:
//   manifest.json        every logical tensor: shape, dtype, and the segments that hold it
//   rank-<r>.safetensors the flat element ranges [start, end) that rank r owned
// plus the trainer's JSON state. Any layout (dp=1, dp=4 with ZeRO-3, ...) reads the
// ranges it needs, so a run saved with one layout resumes with another.
// Atomicity: ranks write into `.step-N.partial/`, rank 0 writes the manifest, fsyncs
// and renames the directory to `step-N`, then atomically replaces `latest`.
// Integrity: each rank records its file's CRC-32C (per tensor and whole file, computed
// from the buffers as they are written) in its index, and the manifest gathers them.
// Reads verify every segment they touch; verifyCheckpoint() checks every byte, and
// findIntactCheckpoint() walks back from `latest` to the newest checkpoint that passes.
// Retention: the newest `keep` (3) checkpoints stay, so a damaged newest one has two
// older ones to fall back to.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { atomicWriteFileSync } from './atomic-write.js';
import { writeSafetensorsStreamed } from './checkpoint-stream.js';
import { writeSafetensorsChecksummed, SafetensorsReader } from './safetensors.js';
import { ChecksumError, crc32c, verifyFile, type ChecksumRange, type FileChecksum } from './checksum.js';
import { fromStorage } from '../core/tensor.js';
import type { DType, Storage } from '../core/dtype.js';
import { allocStorage } from '../core/dtype.js';

export interface Segment {
  /** Logical tensor name, e.g. `h.0.attn.c_attn.weight` or `optim.exp_avg.h.0.attn.c_attn.weight`. */
  name: string;
  /** Full logical shape. */
  shape: number[];
  dtype: DType;
  /** Flat row-major element range of the logical tensor held in `data`. */
  start: number;
  end: number;
  data: Storage;
  /**
   * Set for bytes that are not in memory (disk-offloaded optimizer state): `data` is then
   * empty and the writer reads elements [start, start + out.length) (segment-relative to
   * this.start) in pieces while it writes (checkpoint-stream.ts).
   */
  read?: (start: number, out: Float32Array) => void;
}

interface ManifestEntry {
  shape: number[];
  dtype: DType;
  segments: { file: string; key: string; start: number; end: number }[];
}

export interface Manifest {
  format: 'athanor-checkpoint';
  /** 2 adds `files` (checksums); version 1 checkpoints load without verification. */
  version: 1 | 2;
  step: number;
  world: number;
  tensors: Record<string, ManifestEntry>;
  state: unknown;
  files?: Record<string, FileChecksum>;
}

const stepName = (step: number) => `step-${String(step).padStart(8, '0')}`;

export function partialDir(root: string, step: number): string {
  return join(root, `.${stepName(step)}.partial`);
}

/** Rank 0, before any rank writes: clears a partial directory left by a crashed save. */
export function beginCheckpoint(root: string, step: number): string {
  const dir = partialDir(root, step);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Every rank: writes its segments (may be none) and a small index of them. */
export function writeRankShard(root: string, step: number, rank: number, segments: readonly Segment[]): void {
  const dir = partialDir(root, step);
  mkdirSync(dir, { recursive: true });
  const file = `rank-${rank}.safetensors`;
  const tensors = new Map<string, ReturnType<typeof fromStorage>>();
  const index: Record<string, { shape: number[]; dtype: DType; start: number; end: number }> = {};
  if (segments.some((s) => s.read)) {
    for (const s of segments) if (!s.read && s.data.length !== s.end - s.start) throw new Error(`checkpoint: segment ${s.name}[${s.start}:${s.end}] has ${s.data.length} elements`);
    const checksum = writeSafetensorsStreamed(join(dir, file), segments.map((s) => ({ key: `${s.name}@${s.start}`, dtype: s.dtype, length: s.end - s.start, data: s.read ? null : s.data, read: s.read })));
    for (const s of segments) index[`${s.name}@${s.start}`] = { shape: s.shape, dtype: s.dtype, start: s.start, end: s.end };
    atomicWriteFileSync(join(dir, `rank-${rank}.index.json`), JSON.stringify({ tensors: index, checksum }));
    return;
  }
  for (const s of segments) {
    if (s.data.length !== s.end - s.start) throw new Error(`checkpoint: segment ${s.name}[${s.start}:${s.end}] has ${s.data.length} elements`);
    const key = `${s.name}@${s.start}`;
    tensors.set(key, fromStorage(s.data, [s.data.length], s.dtype));
    index[key] = { shape: s.shape, dtype: s.dtype, start: s.start, end: s.end };
  }
  const checksum = writeSafetensorsChecksummed(join(dir, file), tensors);
  atomicWriteFileSync(join(dir, `rank-${rank}.index.json`), JSON.stringify({ tensors: index, checksum }));
}

/** Rank 0, after every rank wrote: manifest, rename into place, update `latest`. */
export function commitCheckpoint(root: string, step: number, world: number, state: unknown, keep = 3): string {
  const dir = partialDir(root, step);
  const tensors: Record<string, ManifestEntry> = {};
  const files: Record<string, FileChecksum> = {};
  for (let r = 0; r < world; r++) {
    const idxPath = join(dir, `rank-${r}.index.json`);
    if (!existsSync(idxPath)) throw new Error(`checkpoint ${dir}: rank ${r} did not write its shard (missing ${idxPath})`);
    const rankIndex = JSON.parse(readFileSync(idxPath, 'utf8')) as { tensors: Record<string, { shape: number[]; dtype: DType; start: number; end: number }>; checksum: FileChecksum };
    const index = rankIndex.tensors;
    files[`rank-${r}.safetensors`] = rankIndex.checksum;
    for (const [key, e] of Object.entries(index)) {
      const name = key.slice(0, key.lastIndexOf('@'));
      const t = (tensors[name] ??= { shape: e.shape, dtype: e.dtype, segments: [] });
      t.segments.push({ file: `rank-${r}.safetensors`, key, start: e.start, end: e.end });
    }
  }
  for (const [name, t] of Object.entries(tensors)) {
    // Coverage check: the union of segments must be exactly [0, numel) (duplicates allowed if identical ranges).
    const n = t.shape.reduce((a, b) => a * b, 1);
    const segs = [...t.segments].sort((a, b) => a.start - b.start);
    let covered = 0;
    for (const s of segs) {
      if (s.start > covered) break;
      covered = Math.max(covered, s.end);
    }
    if (covered < n) throw new Error(`checkpoint ${dir}: tensor '${name}' is only covered up to element ${covered} of ${n}`);
  }
  const manifest: Manifest = { format: 'athanor-checkpoint', version: 2, step, world, tensors, state, files };
  atomicWriteFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
  fsyncPath(dir);
  const final = join(root, stepName(step));
  rmSync(final, { recursive: true, force: true });
  renameSync(dir, final);
  fsyncPath(root);
  atomicWriteFileSync(join(root, 'latest'), stepName(step) + '\n');
  prune(root, keep);
  return final;
}

function fsyncPath(p: string): void {
  try {
    const fd = openSync(p, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* directory fsync is best effort */ }
}

function prune(root: string, keep: number): void {
  const steps = readdirSync(root).filter((n) => /^step-\d{8}$/.test(n)).sort();
  for (const old of steps.slice(0, Math.max(0, steps.length - keep))) rmSync(join(root, old), { recursive: true, force: true });
}

/** Complete checkpoint directories under `root`, newest first. */
export function checkpointDirs(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root).filter((n) => /^step-\d{8}$/.test(n) && existsSync(join(root, n, 'manifest.json'))).sort().reverse().map((n) => join(root, n));
}

/** Reads every byte of a checkpoint against its manifest's checksums; throws naming the file and the first damaged tensor. */
export function verifyCheckpoint(dir: string): void {
  const r = new CheckpointReader(dir);
  const files = r.manifest.files;
  if (!files) return; // version 1: written before checksums
  for (const [file, fc] of Object.entries(files)) verifyFile(join(dir, file), fc, (x) => r.describeRange(x));
}

/**
 * The newest checkpoint under `root` that passes verifyCheckpoint, starting from the
 * one `latest` names. Every damaged one skipped is reported through `warn`, loudly:
 * training resumes from an older step than the user expects.
 */
export function findIntactCheckpoint(root: string, warn: (msg: string) => void): string | null {
  let first: string | null = null;
  try { first = latestCheckpoint(root); } catch (e) { warn(`WARNING: ${(e as Error).message}`); }
  const dirs = checkpointDirs(root);
  const order = first ? [first, ...dirs.filter((d) => d !== first && d < first!)] : dirs;
  const bad: string[] = [];
  for (const d of order) {
    try {
      verifyCheckpoint(d);
    } catch (e) {
      bad.push(d);
      warn(`WARNING: checkpoint ${d} is damaged and will not be used: ${(e as Error).message}`);
      continue;
    }
    if (bad.length) warn(`WARNING: falling back to the previous intact checkpoint ${d} (skipped ${bad.length} damaged: ${bad.join(', ')})`);
    return d;
  }
  if (bad.length) throw new Error(`${root}: every checkpoint is damaged (${bad.join(', ')}); refusing to resume from corrupted weights (move the directory away to start over)`);
  return null;
}

/** Path of the newest complete checkpoint under `root`, or null. */
export function latestCheckpoint(root: string): string | null {
  const latest = join(root, 'latest');
  if (!existsSync(latest)) return null;
  const name = readFileSync(latest, 'utf8').trim();
  const dir = join(root, name);
  if (!existsSync(join(dir, 'manifest.json'))) throw new Error(`${latest} points to '${name}', which has no manifest.json (checkpoint directory damaged)`);
  return dir;
}

export class CheckpointReader {
  readonly manifest: Manifest;
  private readers = new Map<string, SafetensorsReader>();

  constructor(readonly dir: string) {
    const path = join(dir, 'manifest.json');
    let m: Manifest;
    try {
      m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
    } catch (e) {
      throw new Error(`${path}: cannot read checkpoint manifest: ${(e as Error).message}`);
    }
    if (m.format !== 'athanor-checkpoint' || (m.version !== 1 && m.version !== 2)) throw new Error(`${path}: not an Athanor checkpoint manifest (format ${String(m.format)}, version ${String(m.version)})`);
    this.manifest = m;
  }

  get state(): unknown {
    return this.manifest.state;
  }

  has(name: string): boolean {
    return name in this.manifest.tensors;
  }

  names(): string[] {
    return Object.keys(this.manifest.tensors);
  }

  entry(name: string): ManifestEntry {
    const e = this.manifest.tensors[name];
    if (!e) throw new Error(`${this.dir}: checkpoint has no tensor '${name}'`);
    return e;
  }

  /** Elements [start, end) of a logical tensor, assembled from whichever shards hold them. */
  readRange(name: string, start: number, end: number, out?: Storage): Storage {
    const e = this.entry(name);
    const dst = out ?? allocStorage(e.dtype, end - start);
    let filled = 0;
    for (const s of e.segments) {
      const lo = Math.max(start, s.start), hi = Math.min(end, s.end);
      if (lo >= hi) continue;
      const reader = this.reader(s.file);
      const bytes = reader.readBytes(s.key);
      this.checkSegment(s.file, s.key, reader, bytes);
      const raw = new (allocStorage(e.dtype, 0).constructor as new (b: ArrayBuffer) => Storage)(bytes.buffer as ArrayBuffer);
      dst.set(raw.subarray(lo - s.start, hi - s.start) as never, lo - start);
      filled += hi - lo;
    }
    if (filled < end - start) throw new Error(`${this.dir}: tensor '${name}' range [${start}, ${end}) is not fully present in the checkpoint`);
    return dst;
  }

  readFull(name: string): Storage {
    const e = this.entry(name);
    return this.readRange(name, 0, e.shape.reduce((a, b) => a * b, 1));
  }

  /** 'tensor NAME elements [a, b)' for a segment key, or the range's own name. */
  describeRange(r: ChecksumRange): string {
    const at = r.name.lastIndexOf('@');
    if (at < 0) return r.name;
    const name = r.name.slice(0, at);
    const seg = this.manifest.tensors[name]?.segments.find((s) => s.key === r.name);
    return seg ? `tensor '${name}' elements [${seg.start}, ${seg.end})` : `tensor '${name}'`;
  }

  private checkSegment(file: string, key: string, reader: SafetensorsReader, bytes: Uint8Array): void {
    const fc = this.manifest.files?.[file];
    if (!fc) return;
    const e = reader.entry(key);
    const want = fc.ranges.find((x) => x.name === key);
    const begin = reader.header.dataStart + e.begin;
    if (!want || want.begin !== begin || want.end !== begin + bytes.byteLength) {
      throw new ChecksumError(join(this.dir, file), key, `${join(this.dir, file)}: ${this.describeRange({ name: key, begin, end: begin, crc32c: 0 })} is not where the manifest's checksums place it (header damaged)`);
    }
    const c = crc32c(bytes);
    if (c !== want.crc32c) throw new ChecksumError(join(this.dir, file), key, `${join(this.dir, file)}: checksum mismatch in ${this.describeRange(want)}; the checkpoint is corrupted`);
  }

  private reader(file: string): SafetensorsReader {
    let r = this.readers.get(file);
    if (!r) {
      const path = join(this.dir, file);
      const fc = this.manifest.files?.[file];
      // Size and header first, so a truncated or damaged file is reported by the tensor it hits.
      if (fc) verifyFile(path, fc, (x) => this.describeRange(x), (x) => x.name === '(header)');
      r = SafetensorsReader.open(path);
      this.readers.set(file, r);
    }
    return r;
  }

  close(): void {
    for (const r of this.readers.values()) r.close();
    this.readers.clear();
  }
}

export function checkpointRootOf(dir: string): string {
  return dirname(dir);
}
