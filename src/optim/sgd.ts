// SGD with torch.optim.SGD semantics (maximize=False):
//   d = g + wd*p
//   buf = d on the first step, else momentum*buf + (1-dampening)*d
//   d = nesterov ? d + momentum*buf : buf        (only when momentum != 0)
//   p -= lr*d
import { Optimizer, slotParam, type BaseHyper, type ParamGroup, type ParamGroupSpec, type ParamLike, type Slot } from './optimizer.js';
import { sgdReference, type FloatArray } from '../backend/reference/optim.js';
import { span } from '../backend/native-optim.js';

export interface SgdHyper extends BaseHyper {
  momentum: number;
  dampening: number;
  nesterov: boolean;
}

export const SGD_DEFAULTS: SgdHyper = { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };

export class SGD extends Optimizer<SgdHyper> {
  protected stateNames(group: ParamGroup<SgdHyper>): readonly string[] {
    return group.momentum !== 0 ? ['momentum_buffer'] : [];
  }

  constructor(params: readonly ParamLike[] | readonly ParamGroupSpec<SgdHyper>[], defaults: Partial<SgdHyper> = {}) {
    super(params, { ...SGD_DEFAULTS, ...defaults }, 'SGD');
    for (const g of this.paramGroups) {
      if (!(g.lr >= 0)) throw new Error(`SGD: invalid lr ${g.lr}`);
      if (!(g.momentum >= 0)) throw new Error(`SGD: invalid momentum ${g.momentum}`);
      if (!(g.weightDecay >= 0)) throw new Error(`SGD: invalid weightDecay ${g.weightDecay}`);
      if (g.nesterov && (g.momentum <= 0 || g.dampening !== 0)) throw new Error('SGD: nesterov momentum requires a momentum and zero dampening');
    }
  }

  protected updateSlot(slot: Slot, group: ParamGroup<SgdHyper>, g: FloatArray, gOff: number, gradScale: number): void {
    const n = slot.end - slot.start;
    const p = slotParam(slot);
    const buf = group.momentum !== 0 ? slot.state.momentum_buffer! : null;
    const first = slot.step === 1;
    const nat = this.native(slot);
    if (nat) {
      nat.sgd(span(p.data as Float32Array, p.off, n), span(g as Float32Array, gOff, n), buf as Float32Array | null, n,
        group.lr, group.momentum, 1 - group.dampening, group.weightDecay, group.nesterov ? 1 : 0, first ? 1 : 0, gradScale);
    } else {
      sgdReference(p.data, p.off, g, gOff, buf, n, {
        lr: group.lr, momentum: group.momentum, dampening: group.dampening, weightDecay: group.weightDecay,
        nesterov: group.nesterov, first, gradScale,
      });
    }
  }
}
