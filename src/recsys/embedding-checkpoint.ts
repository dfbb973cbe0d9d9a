// Shard checkpoints. Each server writes, into a shared directory:
//   embedding-shard-<i>-of-<n>.<dumpId>.bin   rows, optimizer state, per-row step and last touch
//   embedding-shard-<i>-of-<n>.json           manifest (groups, dims, optimizer, counts, offsets, checksum)
// The checksum is CRC-32C of the .bin, per block of ROWS_PER_CRC rows of each section
// and for the whole file, computed from the buffers as they are written; a load names
// the group, section and row range of the first damaged block.
// The .bin is written first, then the manifest (the commit point), both with
// atomic-write (temp file, fsync, rename). Rows are stored oldest-first, so
// inserting them in order rebuilds the LRU list.
//
// Loading picks one complete set (the same dumpId on shards 0..n-1). When n is not
// the loader's own shard count, every server scans every old file and keeps the rows
// whose hash maps to it, which re-shards the table with no row lost or duplicated.
import { readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as zlib from 'node:zlib';
import { atomicWriteFile } from '../io/atomic-write.js';
import { ChecksumBuilder, ChecksumError, verifyBytes, type FileChecksum } from '../io/checksum.js';
import { fmix64, mixOut } from './embedding-hash.js';
import type { EmbeddingShard } from './embedding-shard.js';
import type { RowBlock } from './embedding-store.js';
import { parseOptimizer, stateWidth, type SparseOptimizerConfig } from './sparse-optimizer.js';

export const MANIFEST_FORMAT = 'athanor-embedding-shard';
export const MANIFEST_VERSION = 1;

interface Sections { ids: number; rows: number; state: number; rowStep: number; lastTouch: number }

export interface ManifestGroup {
  id: number; name: string; dim: number; optimizer: SparseOptimizerConfig; stateWidth: number; count: number; offsets: Sections;
}

export interface ShardManifest {
  format: string;
  version: number;
  dumpId: string;
  createdAt: string;
  shardIndex: number;
  numShards: number;
  step: number;
  seed: number;
  binFile: string;
  byteLength: number;
  /** zlib CRC-32 of manifests written before `checksum` existed (still verified when present). */
  crc32?: number | null;
  checksum?: FileChecksum;
  groups: ManifestGroup[];
}

export interface LoadResult { rowsLoaded: number; fromNumShards: number; filesScanned: number; dumpId: string; step: number }

const crc32 = (zlib as unknown as { crc32?: (b: Uint8Array, v?: number) => number }).crc32;

/** Rows per checksummed block: a damaged byte is located to within this many rows. */
export const ROWS_PER_CRC = 4096;

const pad8 = (n: number): number => (n + 7) & ~7;
const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export function manifestName(i: number, n: number): string { return `embedding-shard-${i}-of-${n}.json`; }

/** Snapshots the shard synchronously (later updates do not leak in), then writes it. */
export async function dumpShard(shard: EmbeddingShard, dir: string, dumpId: string): Promise<ShardManifest> {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(dumpId)) throw new Error(`dump: dumpId '${dumpId}' must match [A-Za-z0-9._-]{1,64}`);
  const { shardIndex: i, numShards: n } = shard;
  const parts: Uint8Array[] = [];
  const groups: ManifestGroup[] = [];
  const sum = new ChecksumBuilder();
  let off = 0;
  /** Appends one section (`count` rows), checksummed per block of ROWS_PER_CRC rows. */
  const add = (a: ArrayBufferView, label: string, count: number): number => {
    const at = off;
    const all = bytes(a);
    const rowBytes = count > 0 ? all.byteLength / count : 0;
    if (count === 0 && all.byteLength > 0) { parts.push(all); sum.add(label, all); }
    for (let r = 0; r < count; r += ROWS_PER_CRC) {
      const hi = Math.min(count, r + ROWS_PER_CRC);
      const piece = all.subarray(r * rowBytes, hi * rowBytes);
      parts.push(piece);
      sum.add(`${label} rows [${r}, ${hi})`, piece);
    }
    off += a.byteLength;
    const p = pad8(off) - off;
    if (p) {
      const z = new Uint8Array(p);
      parts.push(z);
      sum.add(`${label} padding`, z);
      off += p;
    }
    return at;
  };
  for (const t of shard.tables) {
    if (!t) continue;
    const b = t.exportRows();
    const g = `group ${t.cfg.id} '${t.cfg.name}'`;
    const offsets: Sections = {
      ids: add(b.ids, `${g} ids`, b.count), rows: add(b.rows, `${g} embeddings`, b.count), state: add(b.state, `${g} optimizer state`, b.count),
      rowStep: add(b.rowStep, `${g} row steps`, b.count), lastTouch: add(b.lastTouch, `${g} last touch`, b.count),
    };
    groups.push({ id: t.cfg.id, name: t.cfg.name, dim: t.dim, optimizer: t.cfg.optimizer, stateWidth: t.stW, count: b.count, offsets });
  }
  const binFile = `embedding-shard-${i}-of-${n}.${dumpId}.bin`;
  const m: ShardManifest = {
    format: MANIFEST_FORMAT, version: MANIFEST_VERSION, dumpId, createdAt: new Date().toISOString(),
    shardIndex: i, numShards: n, step: shard.step, seed: shard.config.seed, binFile, byteLength: off, checksum: sum.finish(), groups,
  };
  await atomicWriteFile(join(dir, binFile), parts);
  await atomicWriteFile(join(dir, manifestName(i, n)), JSON.stringify(m, null, 1));
  // Older .bin files of this shard slot are unreachable now that the manifest moved on.
  for (const f of readdirSync(dir)) {
    if (f !== binFile && f.startsWith(`embedding-shard-${i}-of-${n}.`) && f.endsWith('.bin')) {
      try { unlinkSync(join(dir, f)); } catch { /* another process may have removed it */ }
    }
  }
  return m;
}

function readManifest(path: string): ShardManifest {
  let m: ShardManifest;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as ShardManifest;
  } catch (e) {
    throw new ChecksumError(path, null, `${path}: unreadable embedding shard manifest (${(e as Error).message})`);
  }
  if (m.format !== MANIFEST_FORMAT || m.version !== MANIFEST_VERSION) throw new Error(`${path}: not an embedding shard manifest (format ${m.format} v${m.version})`);
  if (!Number.isInteger(m.shardIndex) || !Number.isInteger(m.numShards) || !Array.isArray(m.groups)) throw new Error(`${path}: malformed manifest`);
  return m;
}

/** The complete manifest set to load: `dumpId` if given, else the newest complete set in `dir`. */
export function findCheckpointSet(dir: string, dumpId?: string): ShardManifest[] {
  const sets = new Map<string, ShardManifest[]>();
  for (const f of readdirSync(dir)) {
    if (!/^embedding-shard-\d+-of-\d+\.json$/.test(f)) continue;
    const m = readManifest(join(dir, f));
    if (dumpId !== undefined && m.dumpId !== dumpId) continue;
    const key = `${m.numShards}/${m.dumpId}`;
    (sets.get(key) ?? sets.set(key, []).get(key)!).push(m);
  }
  let best: ShardManifest[] | undefined;
  for (const ms of sets.values()) {
    const n = ms[0]!.numShards;
    const have = new Set(ms.map((m) => m.shardIndex));
    if (have.size !== n || ms.length !== n) continue;
    if (!best || ms[0]!.createdAt > best[0]!.createdAt) best = ms;
  }
  if (!best) throw new Error(`${dir}: no complete embedding checkpoint${dumpId ? ` with dumpId '${dumpId}'` : ''} (need manifests for shards 0..n-1 with one dumpId)`);
  return best.sort((a, b) => a.shardIndex - b.shardIndex);
}

/** The shard's .bin, read once and checked against the manifest's checksum (naming the first damaged rows). */
function readBin(dir: string, m: ShardManifest): Buffer {
  const path = join(dir, m.binFile);
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    throw new ChecksumError(path, null, `${path}: cannot read embedding shard file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); the checkpoint is incomplete`);
  }
  if (m.checksum) verifyBytes(path, raw, m.checksum);
  else if (raw.byteLength !== m.byteLength) throw new ChecksumError(path, null, `${path}: ${raw.byteLength} bytes, manifest says ${m.byteLength}`);
  else if (typeof m.crc32 === 'number' && crc32 && (crc32(raw) >>> 0) !== m.crc32) throw new ChecksumError(path, null, `${path}: crc32 mismatch (torn or corrupted shard file)`);
  return raw.byteOffset % 8 === 0 ? raw : Buffer.from(raw); // typed-array views need aligned offsets
}

/** Reads and checks every shard file of one complete set (for choosing a checkpoint before loading it). */
export function verifyCheckpointSet(dir: string, dumpId?: string): ShardManifest[] {
  const set = findCheckpointSet(dir, dumpId);
  for (const m of set) readBin(dir, m);
  return set;
}

function readBlocks(dir: string, m: ShardManifest): Map<number, { g: ManifestGroup; b: RowBlock }> {
  const path = join(dir, m.binFile);
  const buf = readBin(dir, m);
  const ab = buf.buffer, base = buf.byteOffset;
  const out = new Map<number, { g: ManifestGroup; b: RowBlock }>();
  for (const g of m.groups) {
    const c = g.count, o = g.offsets;
    if (o.lastTouch + 8 * c > m.byteLength) throw new Error(`${path}: group ${g.id} sections run past the end of the file`);
    out.set(g.id, {
      g, b: {
        count: c,
        ids: new Uint32Array(ab, base + o.ids, 2 * c),
        rows: new Float32Array(ab, base + o.rows, c * g.dim),
        state: new Float32Array(ab, base + o.state, c * g.stateWidth),
        rowStep: new Int32Array(ab, base + o.rowStep, c),
        lastTouch: new Float64Array(ab, base + o.lastTouch, c),
      },
    });
  }
  return out;
}

/** Replaces the shard's contents with the rows of a checkpoint that map to it. */
export function loadShard(shard: EmbeddingShard, dir: string, dumpId?: string): LoadResult {
  const set = findCheckpointSet(dir, dumpId);
  const first = set[0]!;
  if (first.seed !== shard.config.seed) throw new Error(`${dir}: checkpoint seed ${first.seed} != server seed ${shard.config.seed}`);
  const files = set.map((m) => readBlocks(dir, m));
  const fromN = first.numShards;
  let loaded = 0;
  for (const gc of shard.config.groups) {
    const mg = first.groups.find((g) => g.id === gc.id);
    // Groups added to the config since the dump start empty.
    const cfg = mg ? { ...gc, optimizer: parseOptimizer(mg.optimizer, `${dir}: group ${gc.id} optimizer`) } : gc;
    if (mg && mg.dim !== gc.dim) throw new Error(`${dir}: group ${gc.id} has dim ${mg.dim} in the checkpoint, ${gc.dim} in the config`);
    const table = shard.makeTable(cfg);
    shard.tables[gc.id] = table;
    if (!mg) continue;
    const stW = stateWidth(cfg.optimizer, cfg.dim);
    // Kept rows from every file, then ordered by last touch so the LRU list comes out right.
    const blocks: RowBlock[] = [];
    const refs: number[] = [];
    for (let f = 0; f < files.length; f++) {
      const e = files[f]!.get(gc.id);
      if (!e) continue;
      if (e.g.stateWidth !== stW) throw new Error(`${dir}: group ${gc.id} state width ${e.g.stateWidth} in shard ${f}, expected ${stW}`);
      const bi = blocks.length;
      blocks.push(e.b);
      const ids = e.b.ids;
      for (let r = 0; r < e.b.count; r++) {
        const lo = ids[2 * r]!, hi = ids[2 * r + 1]!;
        fmix64(hi, lo);
        if (mixOut.hi % shard.numShards === shard.shardIndex) refs.push(bi, r);
      }
    }
    const k = refs.length / 2;
    // Also for one file: a dump lists rows in LRU-list order, which is last-touch order only
    // up to the store's relink window (lru-list.ts), and a table with expiry needs it exact.
    // Ties keep file order.
    const order = Array.from({ length: k }, (_, j) => j);
    const touchOf = (j: number): number => blocks[refs[2 * j]!]!.lastTouch[refs[2 * j + 1]!]!;
    let sorted = true;
    for (let j = 1; j < k && sorted; j++) sorted = touchOf(j - 1) <= touchOf(j);
    if (!sorted) order.sort((a, b) => touchOf(a) - touchOf(b) || a - b);
    for (const j of order) table.importRow(blocks[refs[2 * j]!]!, refs[2 * j + 1]!, stW);
    loaded += k;
  }
  shard.step = Math.max(...set.map((m) => m.step));
  return { rowsLoaded: loaded, fromNumShards: fromN, filesScanned: set.length, dumpId: first.dumpId, step: shard.step };
}
