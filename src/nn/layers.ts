// Basic layers with PyTorch parameter names and layouts.
import type { Tensor } from '../core/tensor.js';
import { Module, parameter, type InitContext } from './module.js';
import { linear, layerNorm, embedding } from '../ops/index.js';

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(ctx: InitContext, readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean; std?: number } = {}) {
    super();
    this.weight = this.param('weight', parameter(ctx, [outFeatures, inFeatures], { kind: 'normal', std: opts.std ?? 0.02 }));
    this.bias = opts.bias === false ? null : this.param('bias', parameter(ctx, [outFeatures], { kind: 'const', value: 0 }));
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias ?? undefined);
  }
}

export class LayerNorm extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor;
  constructor(ctx: InitContext, readonly dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.param('weight', parameter(ctx, [dim], { kind: 'const', value: 1 }));
    this.bias = this.param('bias', parameter(ctx, [dim], { kind: 'const', value: 0 }));
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(ctx: InitContext, readonly num: number, readonly dim: number, std = 0.02) {
    super();
    this.weight = this.param('weight', parameter(ctx, [num, dim], { kind: 'normal', std }));
  }
  forward(idx: Tensor): Tensor {
    return embedding(this.weight, idx);
  }
}
