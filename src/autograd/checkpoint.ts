// Activation recomputation. The wrapped function runs without recording; backward
// re-runs it with recording on (restoring the RNG so dropout masks repeat) and
// backpropagates through the fresh graph. Parameters used inside are listed as node
// inputs so gradient-ready hooks (data-parallel buckets) still see their last use.
import type { Tensor } from '../core/tensor.js';
import type { Rng } from '../core/rng.js';
import { record, noGrad, isGradEnabled, setGradEnabled, backward } from './tape.js';
import { accumulateGrad } from './accumulate.js';
import { scope } from '../core/scope.js';

export interface CheckpointCtx {
  run: (xs: Tensor[]) => Tensor;
  nInputs: number;
  rng?: Rng;
  rngState?: number[];
  /** Runs before the recomputation (e.g. gather sharded parameters). */
  before?: () => void;
  /** Runs after the recomputed graph's backward (e.g. reduce-scatter and release parameters). */
  after?: () => void;
}

export function checkpoint(
  run: (xs: Tensor[]) => Tensor, inputs: Tensor[], params: Tensor[] = [], rng?: Rng,
  hooks: { before?: () => void; after?: () => void } = {},
): Tensor {
  if (!isGradEnabled() || ![...inputs, ...params].some((t) => t.requiresGrad)) return run(inputs);
  const rngState = rng?.getState();
  // The block's intermediates are freed here (only its output is kept): keeping them
  // until the step's scope ends would make recomputation cost memory instead of saving it.
  const out = noGrad(() => scope(() => run(inputs)));
  return record('checkpoint', { run, nInputs: inputs.length, rng, rngState, ...hooks }, [...inputs, ...params], out);
}

/** Gradient rule for 'checkpoint' (joined into the table by grad-rules.ts). */
export function checkpointGrad(node: { attrs: CheckpointCtx; inputs: readonly Tensor[] }, gOut: Tensor): void {
  const { run, nInputs, rng, rngState, before, after: afterHook } = node.attrs;
  const inputs = node.inputs.slice(0, nInputs);
  // Detached leaves share storage with the real inputs; their grads are folded back after.
  const detached = inputs.map((x) => {
    const d = x.view(x.shape, x.strides, x.offset);
    d.requiresGrad = x.requiresGrad;
    return d;
  });
  const after = rng?.getState();
  if (rng && rngState) rng.setState(rngState);
  before?.();
  const prev = setGradEnabled(true);
  try {
    // The recomputed graph lives only for this block's backward.
    scope(() => {
      const out = run(detached);
      if (out.requiresGrad) backward(out, { grad: gOut });
    });
  } finally {
    setGradEnabled(prev);
    if (rng && after) rng.setState(after);
  }
  afterHook?.();
  detached.forEach((d, i) => {
    if (d.grad) {
      accumulateGrad(inputs[i]!, d.grad, true);
      d.grad = null;
    }
  });
}
