// AdamW with torch.optim.AdamW semantics (amsgrad=False, maximize=False), one fused
// native kernel per slot (a parameter, or a ZeRO segment of one):
//   p *= 1 - lr*wd                        (decoupled weight decay)
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
// g is read as grad * gradScale, so clipping and loss scaling cost no extra pass.
// t is the slot's own step count, as PyTorch's per-parameter state['step'].
import { Optimizer, slotParam, type BaseHyper, type ParamGroup, type ParamGroupSpec, type ParamLike, type Slot } from './optimizer.js';
import { adamwReference, type FloatArray } from '../backend/reference/optim.js';
import { span } from '../backend/native-optim.js';

export interface AdamWHyper extends BaseHyper {
  betas: readonly [number, number];
  eps: number;
}

export const ADAMW_DEFAULTS: AdamWHyper = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 };

export class AdamW extends Optimizer<AdamWHyper> {
  protected stateNames(): readonly string[] {
    return ['exp_avg', 'exp_avg_sq'];
  }

  constructor(params: readonly ParamLike[] | readonly ParamGroupSpec<AdamWHyper>[], defaults: Partial<AdamWHyper> = {}) {
    super(params, { ...ADAMW_DEFAULTS, ...defaults }, 'AdamW');
    for (const g of this.paramGroups) checkHyper(g);
  }

  protected updateSlot(slot: Slot, group: ParamGroup<AdamWHyper>, g: FloatArray, gOff: number, gradScale: number): void {
    const [beta1, beta2] = group.betas;
    const t = slot.step;
    // Step scalars in double, as PyTorch computes them in Python.
    const decay = 1 - group.lr * group.weightDecay;
    const stepSize = group.lr / (1 - beta1 ** t);
    const bc2Sqrt = Math.sqrt(1 - beta2 ** t);
    const n = slot.end - slot.start;
    const p = slotParam(slot);
    const m = slot.state.exp_avg!, v = slot.state.exp_avg_sq!;
    const nat = this.native(slot);
    if (nat) {
      nat.adamw(span(p.data as Float32Array, p.off, n), span(g as Float32Array, gOff, n), m as Float32Array, v as Float32Array, n,
        decay, beta1, 1 - beta1, beta2, 1 - beta2, group.eps, stepSize, bc2Sqrt, gradScale);
    } else {
      adamwReference(p.data, p.off, g, gOff, m, v, n, { decay, beta1, beta2, eps: group.eps, stepSize, bc2Sqrt, gradScale });
    }
  }
}

function checkHyper(g: AdamWHyper): void {
  const [b1, b2] = g.betas;
  if (!(g.lr >= 0)) throw new Error(`AdamW: invalid lr ${g.lr}`);
  if (!(g.eps >= 0)) throw new Error(`AdamW: invalid eps ${g.eps}`);
  if (!(b1 >= 0 && b1 < 1)) throw new Error(`AdamW: invalid beta1 ${b1} (expected [0, 1))`);
  if (!(b2 >= 0 && b2 < 1)) throw new Error(`AdamW: invalid beta2 ${b2} (expected [0, 1))`);
  if (!(g.weightDecay >= 0)) throw new Error(`AdamW: invalid weightDecay ${g.weightDecay}`);
}
