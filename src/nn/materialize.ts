// Layout-independent initialization. Every parameter draws from its own RNG stream,
// keyed by (seed, full parameter name), instead of from one stream in construction
// order. So a rank that holds only a shard (tensor parallel), only some layers
// (pipeline) or both can produce exactly the values the single-process model has,
// without ever allocating the full model: build on the meta device, then materialize.
import { fromStorage, type Tensor } from '../core/tensor.js';
import { allocStorage } from '../core/dtype.js';
import { untrack } from '../core/scope.js';
import { Rng } from '../core/rng.js';
import { initSpecs, type Init, type Module } from './module.js';

/** 32-bit stream seed for one parameter (FNV-1a over "seed:name"). */
export function paramSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  const s = `${seed >>> 0}:${name}`;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193) >>> 0; }
  return h;
}

/** A contiguous run of the full parameter held locally: `length` elements from global flat `start`. */
export interface Run { start: number; length: number }

/**
 * Fills `out` with the parameter's values at the given global runs (ascending,
 * non-overlapping; their lengths sum to out.length). The stream is generated in order
 * and the gaps skipped, so any shard equals the same elements of the full tensor.
 */
export function fillInit(out: { length: number; [i: number]: number; fill(v: number): unknown }, init: Init, seed: number, name: string, runs: Run[] = [{ start: 0, length: out.length }]): void {
  if (init.kind === 'const') { out.fill(init.value); return; }
  const rng = new Rng(paramSeed(seed, name));
  const draw = init.kind === 'normal' ? () => init.std * rng.normal() : () => (rng.uniform() * 2 - 1) * init.bound;
  let pos = 0, o = 0;
  for (const r of runs) {
    if (r.start < pos) throw new Error(`fillInit(${name}): runs must be ascending and disjoint`);
    for (; pos < r.start; pos++) draw();
    for (let i = 0; i < r.length; i++) out[o++] = draw();
    pos += r.length;
  }
}

export interface ShardRequest {
  /** Local shape this rank holds. */
  shape: number[];
  /** Where the local elements sit in the full tensor (row-major runs). */
  runs: Run[];
}

/**
 * Replaces every meta parameter of `root` with real storage. `shard(name, meta)` may
 * return the part this rank holds (null: the whole tensor; 'absent': leave it on the
 * meta device, e.g. a pipeline stage's layers held elsewhere). Tied parameters stay
 * tied (one tensor, materialized under its first name).
 */
export function materialize(root: Module, seed: number, shard?: (name: string, meta: Tensor) => ShardRequest | null | 'absent'): void {
  const done = new Map<Tensor, Tensor>();
  for (const [path, m] of root.namedModules()) {
    for (const [n, p] of m.ownParameters()) {
      const prior = done.get(p);
      if (prior) { m.setParam(n, prior); continue; }
      if (!p.box.meta) continue;
      const name = path ? `${path}.${n}` : n;
      const init = initSpecs.get(p);
      if (!init) throw new Error(`materialize: parameter '${name}' has no recorded initializer`);
      const got = shard?.(name, p) ?? null;
      if (got === 'absent') continue;
      const req = got ?? { shape: [...p.shape], runs: [{ start: 0, length: p.size }] };
      const size = req.shape.reduce((a, b) => a * b, 1);
      const data = allocStorage(p.dtype, size);
      fillInit(data as Float32Array, init, seed, name, req.runs);
      const t = fromStorage(data, req.shape, p.dtype);
      untrack(t);
      t.kept = true;
      t.requiresGrad = true;
      t.name = name;
      initSpecs.set(t, init);
      done.set(p, t);
      m.setParam(n, t);
    }
  }
}
