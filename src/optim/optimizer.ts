// Optimizer base: parameter groups, per-parameter state, zeroGrad, state dicts.
//
// Every optimizer updates "slots": a contiguous element range [start, end) of one
// parameter (row-major). A plain Tensor is the slot [0, numel). ZeRO-1 gives each
// rank a ParamSegment list (see shardSegments) so that it holds optimizer state only
// for its own range and updates only those elements. All Athanor optimizers are
// element-wise, so a sharded update is bit-identical to the same range of a full one.
import type { Tensor } from '../core/tensor.js';
import { nativeMinElements } from '../backend/dispatch.js';
import { nativeOptim, type NativeOptim } from '../backend/native-optim.js';
import { markWeightsUpdated } from '../backend/lowp-tensor.js';
import type { FloatArray } from '../backend/reference/optim.js';

export interface ParamSegment {
  param: Tensor;
  /** First element of the parameter (row-major) this optimizer updates. */
  start: number;
  /** One past the last element. */
  end: number;
  /**
   * Gradient of exactly elements [start, end) (end - start contiguous elements), e.g. this
   * rank's slice of a reduce-scattered flat gradient. Default: the same range of param.grad.
   */
  grad?: Tensor;
  /** stateDict key; default param.name, else `param<i>` by position over all groups. */
  name?: string;
}

export type ParamLike = Tensor | ParamSegment;

export interface BaseHyper {
  lr: number;
  weightDecay: number;
}

/** A param group as given to a constructor: its params plus per-group hyperparameter overrides. */
export type ParamGroupSpec<H extends BaseHyper> = { params: readonly ParamLike[] } & Partial<H>;

export interface Slot {
  param: Tensor;
  start: number;
  end: number;
  grad: Tensor | undefined;
  name: string;
  /** Steps this slot has taken (PyTorch's per-parameter state['step']); 0 = no state yet. */
  step: number;
  /** State buffers of end - start elements, in the parameter's dtype (e.g. exp_avg, exp_avg_sq). */
  state: Record<string, FloatArray>;
}

export type ParamGroup<H extends BaseHyper> = H & {
  slots: Slot[];
  /** lr at construction; LR schedules scale from it (PyTorch's initial_lr). */
  initialLr: number;
};

export interface SlotState {
  step: number;
  /** The element range the buffers cover. */
  start: number;
  end: number;
  buffers: Record<string, FloatArray>;
}

export interface OptimizerStateDict {
  /** Number of step() calls. */
  step: number;
  /** Hyperparameters of each group and the names of its slots. */
  groups: ({ params: string[] } & Record<string, unknown>)[];
  /** Per slot name. Slots that never stepped have no entry. */
  state: Record<string, SlotState>;
}

export interface StepOptions {
  /**
   * Multiplies every gradient as the kernels read it: global-norm clipping
   * (clipCoefficient) and loss-scale division without an extra pass over the grads.
   */
  gradScale?: number;
}

function isSegment(p: ParamLike): p is ParamSegment {
  return (p as ParamSegment).param !== undefined && typeof (p as ParamSegment).start === 'number';
}

export abstract class Optimizer<H extends BaseHyper> {
  readonly paramGroups: ParamGroup<H>[] = [];
  /** Number of step() calls. */
  stepCount = 0;

  constructor(params: readonly ParamLike[] | readonly ParamGroupSpec<H>[], readonly defaults: H, kind = 'Optimizer') {
    const specs: ParamGroupSpec<H>[] = params.length > 0 && Array.isArray((params[0] as ParamGroupSpec<H>).params)
      ? [...(params as readonly ParamGroupSpec<H>[])]
      : [{ params: params as readonly ParamLike[] } as ParamGroupSpec<H>];
    const seenParams = new Set<Tensor>();
    const seenNames = new Set<string>();
    let index = 0;
    for (const spec of specs) {
      const { params: ps, ...overrides } = spec;
      const hyper = { ...defaults, ...overrides } as H;
      const slots: Slot[] = [];
      for (const p of ps) {
        const i = index++;
        const seg: ParamSegment = isSegment(p) ? p : { param: p, start: 0, end: p.size };
        const t = seg.param;
        const name = seg.name ?? t.name ?? `param${i}`;
        const where = `${kind}: parameter '${name}'`;
        if (seenParams.has(t)) throw new Error(`${where} appears twice (one slot per parameter and optimizer)`);
        if (seenNames.has(name)) throw new Error(`${where}: duplicate name (set Tensor.name or ParamSegment.name)`);
        seenParams.add(t);
        seenNames.add(name);
        if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`${where} has dtype ${t.dtype}; optimizers update float32 or float64 parameters`);
        if (!t.isContiguous()) throw new Error(`${where} is not contiguous`);
        if (!Number.isInteger(seg.start) || !Number.isInteger(seg.end) || seg.start < 0 || seg.end > t.size || seg.start > seg.end) {
          throw new Error(`${where}: segment [${seg.start}, ${seg.end}) is outside [0, ${t.size})`);
        }
        if (seg.grad && seg.grad.size !== seg.end - seg.start) {
          throw new Error(`${where}: segment grad has ${seg.grad.size} elements, expected ${seg.end - seg.start}`);
        }
        slots.push({ param: t, start: seg.start, end: seg.end, grad: seg.grad, name, step: 0, state: {} });
      }
      this.paramGroups.push({ ...hyper, slots, initialLr: hyper.lr } as ParamGroup<H>);
    }
  }

  /** Names of the state buffers a slot of `group` has once it has stepped. */
  protected abstract stateNames(group: ParamGroup<H>): readonly string[];

  /** Fills a slot's freshly allocated (zeroed) state before its first step. */
  protected initState(_slot: Slot, _group: ParamGroup<H>): void { /* zeros by default */ }

  /** Updates one slot; `slot.step` has already been incremented. */
  protected abstract updateSlot(slot: Slot, group: ParamGroup<H>, g: FloatArray, gOff: number, gradScale: number): void;

  /** One update of every slot that has a gradient (slots without one are skipped, as in PyTorch). */
  step(opts: StepOptions = {}): void {
    const gradScale = opts.gradScale ?? 1;
    this.stepCount++;
    for (const group of this.paramGroups) {
      for (const slot of group.slots) {
        const g = slotGrad(slot);
        if (!g) continue;
        if (slot.step === 0) {
          for (const k of this.stateNames(group)) slot.state[k] = newArray(slot.param, slot.end - slot.start);
          this.initState(slot, group);
        }
        slot.step++;
        this.updateSlot(slot, group, g.data, g.off, gradScale);
      }
    }
    // Mixed precision: the 16-bit weight copies are remade once, at their next use.
    markWeightsUpdated();
  }

  /** Fills every gradient with 0, keeping the buffers (gradient buckets keep pointing at them). */
  zeroGrad(): void {
    for (const group of this.paramGroups) {
      for (const slot of group.slots) {
        slot.param.grad?.data.fill(0);
        if (slot.grad) fillRange(slot.grad, 0);
      }
    }
  }

  /** All slots, in group order. */
  slots(): Slot[] {
    return this.paramGroups.flatMap((g) => g.slots);
  }

  /** Plain copies of hyperparameters and state (typed arrays are copied, not shared). */
  stateDict(): OptimizerStateDict {
    const groups = this.paramGroups.map((g) => {
      const { slots, ...hyper } = g;
      return { ...hyper, params: slots.map((s) => s.name) } as { params: string[] } & Record<string, unknown>;
    });
    const state: Record<string, SlotState> = {};
    for (const s of this.slots()) {
      if (s.step === 0) continue;
      const buffers: Record<string, FloatArray> = {};
      for (const [k, v] of Object.entries(s.state)) buffers[k] = v.slice();
      state[s.name] = { step: s.step, start: s.start, end: s.end, buffers };
    }
    return { step: this.stepCount, groups, state };
  }

  /**
   * Restores hyperparameters and state. A saved range that contains this slot's range
   * (for example full, unsharded state loaded by a ZeRO rank) is sliced to it.
   */
  loadStateDict(sd: OptimizerStateDict): void {
    if (sd.groups.length !== this.paramGroups.length) {
      throw new Error(`loadStateDict: state has ${sd.groups.length} param groups, optimizer has ${this.paramGroups.length}`);
    }
    sd.groups.forEach((saved, gi) => {
      const group = this.paramGroups[gi]!;
      for (const [k, v] of Object.entries(saved)) {
        if (k === 'params' || k === 'slots') continue;
        if (k in group) (group as unknown as Record<string, unknown>)[k] = Array.isArray(v) ? [...v] : v;
      }
    });
    for (const group of this.paramGroups) for (const slot of group.slots) {
      const e = sd.state[slot.name];
      slot.state = {};
      slot.step = 0;
      if (!e) continue;
      const where = `loadStateDict: parameter '${slot.name}'`;
      if (e.start > slot.start || e.end < slot.end) {
        throw new Error(`${where}: saved range [${e.start}, ${e.end}) does not cover [${slot.start}, ${slot.end})`);
      }
      for (const k of this.stateNames(group)) {
        const buf = e.buffers[k];
        if (!buf) throw new Error(`${where}: state '${k}' is missing`);
        if (buf.length !== e.end - e.start) throw new Error(`${where}: state '${k}' has ${buf.length} elements, range [${e.start}, ${e.end}) needs ${e.end - e.start}`);
        const arr = newArray(slot.param, slot.end - slot.start);
        arr.set(buf.subarray(slot.start - e.start, slot.end - e.start));
        slot.state[k] = arr;
      }
      slot.step = e.step;
    }
    this.stepCount = sd.step;
  }

  /** Native kernels when this slot should use them (float32 and not tiny). */
  protected native(slot: Slot): NativeOptim | null {
    if (slot.param.dtype !== 'float32' || slot.end - slot.start < nativeMinElements()) return null;
    return nativeOptim();
  }
}

function newArray(t: Tensor, n: number): FloatArray {
  return t.dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
}

function fillRange(t: Tensor, v: number): void {
  if (t.isContiguous()) t.data.fill(v, t.offset, t.offset + t.size);
  else throw new Error('zeroGrad: segment grad is not contiguous');
}

/** The gradient of a slot's range as (array, offset), or null when there is none. */
export function slotGrad(slot: Pick<Slot, 'param' | 'start' | 'end' | 'grad' | 'name'>): { data: FloatArray; off: number } | null {
  const p = slot.param;
  if (slot.grad) {
    const g = slot.grad;
    if (g.dtype !== p.dtype || !g.isContiguous()) throw new Error(`parameter '${slot.name}': segment grad must be contiguous ${p.dtype}`);
    return { data: g.data as FloatArray, off: g.offset };
  }
  const g = p.grad;
  if (!g) return null;
  if (g.dtype !== p.dtype || !g.isContiguous() || g.size !== p.size) {
    throw new Error(`parameter '${slot.name}': grad must be a contiguous ${p.dtype} tensor of ${p.size} elements (got ${g.dtype}, ${g.size})`);
  }
  return { data: g.data as FloatArray, off: g.offset + slot.start };
}

/** The parameter storage of a slot's range as (array, offset). */
export function slotParam(slot: Slot): { data: FloatArray; off: number } {
  return { data: slot.param.data as FloatArray, off: slot.param.offset + slot.start };
}

/**
 * ZeRO-1 sharding: the flat element range [start, end) of the concatenation of `params`
 * (in order, each flattened row-major) as one segment per parameter it touches.
 */
export function shardSegments(params: readonly Tensor[], start: number, end: number): ParamSegment[] {
  const out: ParamSegment[] = [];
  let base = 0;
  for (const p of params) {
    const lo = Math.max(start, base), hi = Math.min(end, base + p.size);
    if (lo < hi) out.push({ param: p, start: lo - base, end: hi - base });
    base += p.size;
  }
  return out;
}

/**
 * Two groups in the GPT recipe: weight decay on parameters with >= 2 dims, none on the
 * rest (biases, LayerNorm). Segments are classified by their parameter's shape.
 */
export function weightDecayGroups<H extends BaseHyper>(params: readonly ParamLike[], weightDecay: number): ParamGroupSpec<H>[] {
  const decay: ParamLike[] = [], noDecay: ParamLike[] = [];
  for (const p of params) ((isSegment(p) ? p.param : p).ndim >= 2 ? decay : noDecay).push(p);
  // Always two groups (maybe empty), so every ZeRO rank's state dict has the same group layout.
  return [{ params: decay, weightDecay } as unknown as ParamGroupSpec<H>, { params: noDecay, weightDecay: 0 } as unknown as ParamGroupSpec<H>];
}
