// Adagrad with torch.optim.Adagrad semantics (maximize=False):
//   d = g + wd*p;  clr = lr / (1 + (t-1)*lrDecay)
//   sum += d*d;  p -= clr * d / (sqrt(sum) + eps)
// with sum starting at initialAccumulatorValue.
import { Optimizer, slotParam, type BaseHyper, type ParamGroup, type ParamGroupSpec, type ParamLike, type Slot } from './optimizer.js';
import { adagradReference, type FloatArray } from '../backend/reference/optim.js';
import { span } from '../backend/native-optim.js';

export interface AdagradHyper extends BaseHyper {
  lrDecay: number;
  initialAccumulatorValue: number;
  eps: number;
}

export const ADAGRAD_DEFAULTS: AdagradHyper = { lr: 1e-2, lrDecay: 0, weightDecay: 0, initialAccumulatorValue: 0, eps: 1e-10 };

export class Adagrad extends Optimizer<AdagradHyper> {
  protected stateNames(): readonly string[] {
    return ['sum'];
  }

  constructor(params: readonly ParamLike[] | readonly ParamGroupSpec<AdagradHyper>[], defaults: Partial<AdagradHyper> = {}) {
    super(params, { ...ADAGRAD_DEFAULTS, ...defaults }, 'Adagrad');
    for (const g of this.paramGroups) {
      if (!(g.lr >= 0)) throw new Error(`Adagrad: invalid lr ${g.lr}`);
      if (!(g.lrDecay >= 0)) throw new Error(`Adagrad: invalid lrDecay ${g.lrDecay}`);
      if (!(g.weightDecay >= 0)) throw new Error(`Adagrad: invalid weightDecay ${g.weightDecay}`);
      if (!(g.initialAccumulatorValue >= 0)) throw new Error(`Adagrad: invalid initialAccumulatorValue ${g.initialAccumulatorValue}`);
      if (!(g.eps >= 0)) throw new Error(`Adagrad: invalid eps ${g.eps}`);
    }
  }

  protected override initState(slot: Slot, group: ParamGroup<AdagradHyper>): void {
    slot.state.sum!.fill(group.initialAccumulatorValue);
  }

  protected updateSlot(slot: Slot, group: ParamGroup<AdagradHyper>, g: FloatArray, gOff: number, gradScale: number): void {
    const n = slot.end - slot.start;
    const p = slotParam(slot);
    const clr = group.lr / (1 + (slot.step - 1) * group.lrDecay);
    const sum = slot.state.sum!;
    const nat = this.native(slot);
    if (nat) {
      nat.adagrad(span(p.data as Float32Array, p.off, n), span(g as Float32Array, gOff, n), sum as Float32Array, n,
        clr, group.weightDecay, group.eps, gradScale);
    } else {
      adagradReference(p.data, p.off, g, gOff, sum, n, clr, group.weightDecay, group.eps, gradScale);
    }
  }
}
