// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_, norm_type=2).
// The sum of squares runs in a native kernel with double accumulation; a NaN or Inf
// anywhere makes the returned norm non-finite, which the trainer uses to skip the step.
// The clip factor can be applied in place (PyTorch behaviour) or handed to
// optimizer.step({ gradScale }) so the optimizer's single pass applies it.
import type { Tensor } from '../core/tensor.js';
import { nativeMinElements } from '../backend/dispatch.js';
import { nativeOptim, span } from '../backend/native-optim.js';
import { scaleReference, sumSquaresReference, type FloatArray } from '../backend/reference/optim.js';
import { slotGrad, type ParamLike, type ParamSegment } from './optimizer.js';

interface GradRange { data: FloatArray; off: number; n: number }

function gradRanges(params: readonly ParamLike[]): GradRange[] {
  const out: GradRange[] = [];
  const seen = new Set<Tensor>();
  params.forEach((p, i) => {
    const seg: ParamSegment = (p as ParamSegment).param !== undefined && typeof (p as ParamSegment).start === 'number'
      ? p as ParamSegment : { param: p as Tensor, start: 0, end: (p as Tensor).size };
    // A tied weight listed twice has one gradient; count it once.
    if (!seg.grad && seg.start === 0 && seg.end === seg.param.size) {
      if (seen.has(seg.param)) return;
      seen.add(seg.param);
    }
    const g = slotGrad({ ...seg, grad: seg.grad, name: seg.name ?? seg.param.name ?? `param${i}` });
    if (g && seg.end > seg.start) out.push({ data: g.data, off: g.off, n: seg.end - seg.start });
  });
  return out;
}

function useNative(r: GradRange) {
  return r.data instanceof Float32Array && r.n >= nativeMinElements() ? nativeOptim() : null;
}

/**
 * Sum of squares of the gradients (double). Parameters without a gradient count as
 * zero. ZeRO/TP ranks all-reduce this over their shards, then take the square root.
 */
export function gradSumSquares(params: readonly ParamLike[]): number {
  let s = 0;
  for (const r of gradRanges(params)) {
    const nat = useNative(r);
    s += nat ? nat.sumsq(span(r.data as Float32Array, r.off, r.n), r.n) : sumSquaresReference(r.data, r.off, r.n);
  }
  return s;
}

/** Global L2 norm of the gradients; non-finite when any gradient element is NaN or Inf. */
export function gradNorm(params: readonly ParamLike[]): number {
  return Math.sqrt(gradSumSquares(params));
}

/**
 * PyTorch's factor min(1, maxNorm / (totalNorm + 1e-6)). 1 for a non-finite norm:
 * the step should be skipped instead, and scaling by NaN would destroy the gradients.
 */
export function clipCoefficient(totalNorm: number, maxNorm: number): number {
  if (!Number.isFinite(totalNorm)) return 1;
  return Math.min(1, maxNorm / (totalNorm + 1e-6));
}

/** Multiplies every gradient by `factor` in place. */
export function scaleGrads(params: readonly ParamLike[], factor: number): void {
  if (factor === 1) return;
  for (const r of gradRanges(params)) {
    const nat = useNative(r);
    if (nat) nat.scale(span(r.data as Float32Array, r.off, r.n), r.n, factor);
    else scaleReference(r.data, r.off, r.n, factor);
  }
}

export interface ClipOptions {
  /**
   * Scale the gradients in place (default true, as PyTorch). With false nothing is
   * written: pass clipCoefficient(norm, maxNorm) to optimizer.step({ gradScale }).
   */
  scaleInPlace?: boolean;
}

/**
 * Clips the global gradient norm to `maxNorm` and returns the norm before clipping.
 * A non-finite norm leaves the gradients untouched (unlike PyTorch, which would
 * multiply them by NaN) and is returned so the caller can skip the step.
 */
export function clipGradNorm(params: readonly ParamLike[], maxNorm: number, opts: ClipOptions = {}): number {
  const norm = gradNorm(params);
  if (opts.scaleInPlace ?? true) {
    const c = clipCoefficient(norm, maxNorm);
    if (c < 1) scaleGrads(params, c);
  }
  return norm;
}
