// Modules hold named parameters and child modules, PyTorch style, so parameter
// names (and safetensors keys) are the dotted paths `h.0.attn.c_attn.weight`.
// Models are plain single-process code; parallelism is applied to them afterwards.
import { Tensor, fromStorage, metaTensor } from '../core/tensor.js';
import { allocStorage, type DType } from '../core/dtype.js';
import { untrack } from '../core/scope.js';
import { sameShape, shapeStr, numel } from '../core/layout.js';
import type { Rng } from '../core/rng.js';

export type Device = 'cpu' | 'meta';

export interface InitContext {
  device: Device;
  dtype: DType;
  rng: Rng;
}

export type Init = { kind: 'normal'; std: number } | { kind: 'uniform'; bound: number } | { kind: 'const'; value: number };

/** Creates a trainable leaf. On the meta device only its shape exists. */
export function parameter(ctx: InitContext, shape: readonly number[], init: Init): Tensor {
  let t: Tensor;
  if (ctx.device === 'meta') {
    t = metaTensor(shape, ctx.dtype);
    initSpecs.set(t, init);
  } else {
    const data = allocStorage(ctx.dtype, numel(shape));
    if (init.kind === 'normal') ctx.rng.fillNormal(data, 0, init.std);
    else if (init.kind === 'uniform') ctx.rng.fillUniform(data, -init.bound, init.bound);
    else if (init.value !== 0) data.fill(init.value);
    t = fromStorage(data, shape, ctx.dtype);
  }
  untrack(t);
  t.kept = true;
  t.requiresGrad = true;
  return t;
}

/** How each meta parameter is to be initialized (read by materialize.ts). */
export const initSpecs = new WeakMap<Tensor, Init>();

export class Module {
  training = true;
  private readonly ownParams = new Map<string, Tensor>();
  private readonly children = new Map<string, Module>();

  protected param(name: string, t: Tensor): Tensor {
    this.ownParams.set(name, t);
    return t;
  }

  protected child<M extends Module>(name: string, m: M): M {
    this.children.set(name, m);
    return m;
  }

  /** The current tensor registered under `name` (after any setParam). */
  getParam(name: string): Tensor {
    const t = this.ownParams.get(name);
    if (!t) throw new Error(`${this.constructor.name}: no parameter '${name}'`);
    return t;
  }

  /** Replaces a parameter in place (used to tie weights or to install a sharded view). */
  setParam(name: string, t: Tensor): void {
    if (!this.ownParams.has(name)) throw new Error(`setParam: no parameter '${name}'`);
    this.ownParams.set(name, t);
  }

  /** This module's own parameters (not its children's), by local name. */
  ownParameters(): [string, Tensor][] {
    return [...this.ownParams];
  }

  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    const seen = new Set<Tensor>();
    this.collect(prefix, out, seen);
    return out;
  }

  private collect(prefix: string, out: [string, Tensor][], seen: Set<Tensor>): void {
    for (const [n, p] of this.ownParams) {
      if (seen.has(p)) continue; // tied weights appear once, under their first name
      seen.add(p);
      out.push([prefix + n, p]);
    }
    for (const [n, c] of this.children) c.collect(`${prefix}${n}.`, out, seen);
  }

  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, c] of this.children) out.push(...c.namedModules(`${prefix}${n}.`));
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  numParameters(): number {
    return this.parameters().reduce((s, p) => s + p.size, 0);
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  stateDict(): Map<string, Tensor> {
    return new Map(this.namedParameters());
  }

  /** Copies values in; every key must match by name and shape (strict) so a wrong checkpoint fails loudly. */
  loadStateDict(state: Map<string, Tensor>, opts: { strict?: boolean; source?: string } = {}): void {
    const src = opts.source ?? 'state dict';
    const own = this.stateDict();
    if (opts.strict !== false) {
      const missing = [...own.keys()].filter((k) => !state.has(k));
      const extra = [...state.keys()].filter((k) => !own.has(k));
      if (missing.length || extra.length) {
        throw new Error(`${src}: parameter names do not match the model` +
          (missing.length ? `; missing: ${missing.slice(0, 8).join(', ')}` : '') +
          (extra.length ? `; unexpected: ${extra.slice(0, 8).join(', ')}` : ''));
      }
    }
    for (const [k, p] of own) {
      const v = state.get(k);
      if (!v) continue;
      if (!sameShape(v.shape, p.shape)) throw new Error(`${src}: '${k}' has shape ${shapeStr(v.shape)}, the model expects ${shapeStr(p.shape)}`);
      copyValues(p, v, `${src}: '${k}'`);
    }
  }
}

function copyValues(dst: Tensor, src: Tensor, where: string): void {
  if (dst.dtype !== src.dtype) throw new Error(`${where}: dtype ${src.dtype} does not match ${dst.dtype}`);
  if (!src.isContiguous() || !dst.isContiguous()) throw new Error(`${where}: expected contiguous tensors`);
  dst.data.set(src.data.subarray(src.offset, src.offset + src.size) as never, dst.offset);
}

/**
 * The generic module hook: replaces `m[key]` (usually `forward`) with `wrap(next)`, where
 * `next` is the previous method bound to `m`. Parallel transforms (ZeRO-3 gathers,
 * tensor-parallel collectives and sharded compute) are installed this way from outside,
 * so model code stays single-process. Hooks stack: the last one installed runs first.
 */
export function wrapMethod<M extends object, K extends keyof M>(m: M, key: K, wrap: (next: M[K]) => M[K]): void {
  const prev = m[key];
  if (typeof prev !== 'function') throw new Error(`wrapMethod: ${m.constructor.name}.${String(key)} is not a method`);
  m[key] = wrap((prev as (...a: unknown[]) => unknown).bind(m) as M[K]);
}
