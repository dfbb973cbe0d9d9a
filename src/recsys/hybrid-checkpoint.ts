// Checkpoints of a hybrid run, all in one directory:
//   emb-<step>/                     the embedding servers' dump at that step (their own format)
//   dense-<step>.safetensors        dense parameters, dense optimizer state, and in its
//                                   metadata the step, data position and embedding dump id
// The embedding dump is written first, the dense file last (atomically): the dense
// file is the commit point, so a crash in between leaves the previous step current.
import { existsSync, mkdirSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type RawTensor, type WritableTensor } from '../io/safetensors.js';
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

export function embDirOf(dir: string, step: number): string { return join(dir, `emb-${step}`); }
export function densePathOf(dir: string, step: number): string { return join(dir, `dense-${step}.safetensors`); }
export function dumpIdOf(step: number): string { return `step${step}`; }

/** Steps with a committed dense file (ascending). */
export function checkpointSteps(dir: string): number[] {
  if (!existsSync(dir)) return [];
  const out: number[] = [];
  for (const f of readdirSync(dir)) {
    const m = /^dense-(\d+)\.safetensors$/.exec(f);
    if (m) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

export function latestCheckpoint(dir: string): HybridCheckpointInfo | null {
  const steps = checkpointSteps(dir);
  if (!steps.length) return null;
  const s = steps[steps.length - 1]!;
  const { metadata } = readSafetensors(densePathOf(dir, s), []);
  if (metadata.format !== HYBRID_CKPT_FORMAT) throw new Error(`${densePathOf(dir, s)}: not a hybrid checkpoint (format '${metadata.format}')`);
  const data = JSON.parse(metadata.data ?? 'null') as DataPosition;
  return { step: s, densePath: densePathOf(dir, s), embDir: embDirOf(dir, s), dumpId: metadata.dumpId ?? dumpIdOf(s), data };
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
  writeSafetensors(path, t, {
    format: HYBRID_CKPT_FORMAT, step: String(data.step), dumpId: dumpIdOf(data.step), data: JSON.stringify(data),
    optimizer: JSON.stringify({ step: sd.step, groups: sd.groups, slots }),
  });
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
    try { unlinkSync(densePathOf(dir, s)); } catch { /* gone */ }
    rmSync(embDirOf(dir, s), { recursive: true, force: true });
  }
  // Embedding dumps without a dense file are uncommitted leftovers of a crash.
  for (const f of readdirSync(dir)) {
    const m = /^emb-(\d+)$/.exec(f);
    if (m && !keepSet.has(Number(m[1])) && Number(m[1]) < Math.max(-1, ...keepSet)) rmSync(join(dir, f), { recursive: true, force: true });
  }
}
