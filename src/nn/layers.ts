// Basic layers with PyTorch parameter names and layouts.
import type { Tensor } from '../core/tensor.js';
import { Module, parameter, type InitContext } from './module.js';
import { linear, layerNorm, embedding } from '../ops/index.js';

// Parameters are read through getters so setParam (weight tying, sharded views) takes effect.
export class Linear extends Module {
  private readonly hasBias: boolean;
  constructor(ctx: InitContext, readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean; std?: number } = {}) {
    super();
    this.param('weight', parameter(ctx, [outFeatures, inFeatures], { kind: 'normal', std: opts.std ?? 0.02 }));
    this.hasBias = opts.bias !== false;
    if (this.hasBias) this.param('bias', parameter(ctx, [outFeatures], { kind: 'const', value: 0 }));
  }
  get weight(): Tensor { return this.getParam('weight'); }
  get bias(): Tensor | null { return this.hasBias ? this.getParam('bias') : null; }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias ?? undefined);
  }
}

export class LayerNorm extends Module {
  constructor(ctx: InitContext, readonly dim: number, readonly eps = 1e-5) {
    super();
    this.param('weight', parameter(ctx, [dim], { kind: 'const', value: 1 }));
    this.param('bias', parameter(ctx, [dim], { kind: 'const', value: 0 }));
  }
  get weight(): Tensor { return this.getParam('weight'); }
  get bias(): Tensor { return this.getParam('bias'); }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  constructor(ctx: InitContext, readonly num: number, readonly dim: number, std = 0.02) {
    super();
    this.param('weight', parameter(ctx, [num, dim], { kind: 'normal', std }));
  }
  get weight(): Tensor { return this.getParam('weight'); }
  forward(idx: Tensor): Tensor {
    return embedding(this.weight, idx);
  }
}
