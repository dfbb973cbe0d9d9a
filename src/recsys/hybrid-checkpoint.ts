// Checkpoints of a hybrid run, all in one directory:
//   emb-<step>/                     the embedding servers' dump at that step (their own format,
//                                   each .bin checksummed in its shard manifest)
//   dense-<step>.safetensors        dense parameters, dense optimizer state, and in its
//                                   metadata the step, data position and embedding dump id
//   checkpoint-<step>.json          the commit point: CRC-32C of the dense file (per tensor)
//                                   and of each embedding shard manifest
// The embedding dump is written first, then the dense file, then the manifest (each
// atomically), so a crash in between leaves the previous step current.
// Retention: the newest `keep` (train.keepCheckpoints, default 2) steps stay;
// latestCheckpoint() verifies every file of a step and falls back to an older intact
// step, with a warning, when the newest is damaged.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensorsChecksummed, type RawTensor, type WritableTensor } from '../io/safetensors.js';
import { atomicWriteFileSync } from '../io/atomic-write.js';
import { crc32c, verifyFile, ChecksumError, type FileChecksum } from '../io/checksum.js';
import { verifyCheckpointSet } from './embedding-checkpoint.js';
import type { Optimizer, BaseHyper, OptimizerStateDict } from '../optim/optimizer.js';
import type { Module } from '../nn/module.js';

export const HYBRID_CKPT_FORMAT = 'athanor-hybrid-checkpoint-v1';

export interface DataPosition {
  /** Global steps done; every trainer has consumed step * batchSize samples of its shard. */
  step: number;
  batchSize: number;
  worldSize: number;
  samplesPerRank: number;
}

export interface HybridCheckpointInfo {
  step: number;
  densePath: string;
  embDir: string;
  dumpId: string;
  data: DataPosition;
}

export const HYBRID_MANIFEST_FORMAT = 'athanor-hybrid-manifest';

interface HybridManifest {
  format: typeof HYBRID_MANIFEST_FORMAT;
  version: 1;
  step: number;
  dumpId: string;
  dense: FileChecksum;
  /** Embedding shard manifest file name → CRC-32C of its bytes. */
  embManifests: Record<string, number>;
}

export function manifestPathOf(dir: string, step: number): string { return join(dir, `checkpoint-${step}.json`); }
export function embDirOf(dir: string, step: number): string { return join(dir, `emb-${step}`); }
export function densePathOf(dir: string, step: number): string { return join(dir, `dense-${step}.safetensors`); }
export function dumpIdOf(step: number): string { return `step${step}`; }

/** Steps with a committed manifest (ascending). */
export function checkpointSteps(dir: string): number[] {
  if (!existsSync(dir)) return [];
  const out: number[] = [];
  for (const f of readdirSync(dir)) {
    const m = /^checkpoint-(\d+)\.json$/.exec(f);
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

/** Checks every file of step `s` against its checksums; throws naming the file and the first damaged tensor or rows. */
export function verifyHybridCheckpoint(dir: string, s: number): HybridCheckpointInfo {
  const mp = manifestPathOf(dir, s);
  let m: HybridManifest;
  try {
    m = JSON.parse(readFileSync(mp, 'utf8')) as HybridManifest;
  } catch (e) {
    throw new ChecksumError(mp, null, `${mp}: unreadable checkpoint manifest (${(e as Error).message})`);
  }
  if (m.format !== HYBRID_MANIFEST_FORMAT || m.step !== s) throw new ChecksumError(mp, null, `${mp}: not a hybrid checkpoint manifest for step ${s}`);
  const densePath = densePathOf(dir, s);
  verifyFile(densePath, m.dense, (r) => (r.name === '(header)' ? 'the header' : `tensor '${r.name}'`));
  const embDir = embDirOf(dir, s);
  for (const [f, c] of Object.entries(m.embManifests)) {
    const p = join(embDir, f);
    let got: number;
    try { got = crc32c(readFileSync(p)); } catch { throw new ChecksumError(p, null, `${p}: embedding shard manifest is missing`); }
    if (got !== c) throw new ChecksumError(p, null, `${p}: checksum mismatch (embedding shard manifest corrupted)`);
  }
  verifyCheckpointSet(embDir, m.dumpId);
  const { metadata } = readSafetensors(densePath, []);
  if (metadata.format !== HYBRID_CKPT_FORMAT) throw new Error(`${densePath}: not a hybrid checkpoint (format '${metadata.format}')`);
  const data = JSON.parse(metadata.data ?? 'null') as DataPosition;
  return { step: s, densePath, embDir, dumpId: m.dumpId, data };
}

/**
 * The newest intact checkpoint (every file verified), or null when there is none.
 * Damaged steps are skipped with a loud warning; if every step is damaged this throws
 * rather than silently start over.
 */
export function latestCheckpoint(dir: string, warn: (msg: string) => void = (m) => process.stderr.write(`athanor: ${m}\n`)): HybridCheckpointInfo | null {
  const steps = checkpointSteps(dir).reverse();
  const bad: number[] = [];
  for (const s of steps) {
    try {
      const info = verifyHybridCheckpoint(dir, s);
      if (bad.length) warn(`WARNING: falling back to the previous intact checkpoint, step ${s} (skipped damaged step${bad.length > 1 ? 's' : ''} ${bad.join(', ')})`);
      return info;
    } catch (e) {
      bad.push(s);
      warn(`WARNING: checkpoint step ${s} in ${dir} is damaged and will not be used: ${(e as Error).message}`);
    }
  }
  if (bad.length) throw new Error(`${dir}: every checkpoint is damaged (steps ${bad.join(', ')}); refusing to resume from corrupted state`);
  return null;
}

/** Writes the dense file (the commit point; the embedding dump must already be complete). */
export function writeDenseCheckpoint(dir: string, model: Module, opt: Optimizer<BaseHyper>, data: DataPosition): string {
  mkdirSync(dir, { recursive: true });
  const t = new Map<string, WritableTensor>();
  for (const [n, p] of model.namedParameters()) t.set(`model.${n}`, p);
  const sd = opt.stateDict();
  const slots: Record<string, { step: number; start: number; end: number; buffers: string[] }> = {};
  for (const [name, st] of Object.entries(sd.state)) {
    slots[name] = { step: st.step, start: st.start, end: st.end, buffers: Object.keys(st.buffers) };
    for (const [b, arr] of Object.entries(st.buffers)) {
      const raw: RawTensor = { dtype: arr instanceof Float64Array ? 'F64' : 'F32', shape: [arr.length], data: arr };
      t.set(`optim.${name}.${b}`, raw);
    }
  }
  const path = densePathOf(dir, data.step);
  const dense = writeSafetensorsChecksummed(path, t, {
    format: HYBRID_CKPT_FORMAT, step: String(data.step), dumpId: dumpIdOf(data.step), data: JSON.stringify(data),
    optimizer: JSON.stringify({ step: sd.step, groups: sd.groups, slots }),
  });
  // The shard manifests are a few hundred bytes each; their .bin files are checksummed inside them.
  const embDir = embDirOf(dir, data.step);
  const embManifests: Record<string, number> = {};
  for (const f of existsSync(embDir) ? readdirSync(embDir) : []) {
    if (/^embedding-shard-\d+-of-\d+\.json$/.test(f)) embManifests[f] = crc32c(readFileSync(join(embDir, f)));
  }
  const m: HybridManifest = { format: HYBRID_MANIFEST_FORMAT, version: 1, step: data.step, dumpId: dumpIdOf(data.step), dense, embManifests };
  atomicWriteFileSync(manifestPathOf(dir, data.step), JSON.stringify(m));
  return path;
}

/** Restores parameters and optimizer state from a dense file. */
export function readDenseCheckpoint(path: string, model: Module, opt: Optimizer<BaseHyper>): void {
  const { tensors, metadata } = readSafetensors(path);
  const params = new Map<string, import('../core/tensor.js').Tensor>();
  for (const [k, v] of tensors) if (k.startsWith('model.')) params.set(k.slice(6), v);
  model.loadStateDict(params, { source: path });
  const o = JSON.parse(metadata.optimizer ?? '{}') as { step: number; groups: OptimizerStateDict['groups']; slots: Record<string, { step: number; start: number; end: number; buffers: string[] }> };
  const state: OptimizerStateDict['state'] = {};
  for (const [name, s] of Object.entries(o.slots ?? {})) {
    const buffers: Record<string, Float32Array | Float64Array> = {};
    for (const b of s.buffers) {
      const x = tensors.get(`optim.${name}.${b}`);
      if (!x) throw new Error(`${path}: optimizer buffer '${name}.${b}' is missing`);
      buffers[b] = (x.data as Float32Array | Float64Array).slice(x.offset, x.offset + x.size);
    }
    state[name] = { step: s.step, start: s.start, end: s.end, buffers };
  }
  opt.loadStateDict({ step: o.step, groups: o.groups, state });
  for (const v of tensors.values()) v.dispose();
}

/** Keeps the newest `keep` checkpoints (dense files and their embedding dumps). */
export function pruneCheckpoints(dir: string, keep: number): void {
  const steps = checkpointSteps(dir);
  const keepSet = new Set(steps.slice(Math.max(0, steps.length - keep)));
  for (const s of steps) {
    if (keepSet.has(s)) continue;
    try { unlinkSync(manifestPathOf(dir, s)); } catch { /* gone */ }
    try { unlinkSync(densePathOf(dir, s)); } catch { /* gone */ }
    rmSync(embDirOf(dir, s), { recursive: true, force: true });
  }
  // Embedding dumps and dense files without a manifest are uncommitted leftovers of a crash.
  for (const f of readdirSync(dir)) {
    const m = /^emb-(\d+)$/.exec(f) ?? /^dense-(\d+)\.safetensors$/.exec(f);
    if (m && !keepSet.has(Number(m[1])) && Number(m[1]) < Math.max(-1, ...keepSet)) rmSync(join(dir, f), { recursive: true, force: true });
  }
}
