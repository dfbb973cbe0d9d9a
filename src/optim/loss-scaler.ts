// Dynamic loss scaling for fp16 training (PyTorch GradScaler semantics): an overflow
// (non-finite gradients) skips the step and multiplies the scale by backoffFactor;
// `growthInterval` overflow-free steps in a row multiply it by growthFactor.
// The scale is applied where gradients enter fp16 (backend/precision.ts).
export interface LossScalerOptions {
  initScale: number;
  growthFactor?: number;
  backoffFactor?: number;
  growthInterval: number;
  /** Below this the scale stops backing off: overflows then count as failed steps. */
  minScale?: number;
}

export interface LossScalerState {
  scale: number;
  goodSteps: number;
}

export class DynamicLossScaler {
  scale: number;
  goodSteps = 0;
  private readonly growth: number;
  private readonly backoff: number;
  private readonly interval: number;
  readonly minScale: number;

  constructor(o: LossScalerOptions) {
    if (!(o.initScale > 0)) throw new Error(`loss scaler: initScale must be > 0, got ${o.initScale}`);
    this.scale = o.initScale;
    this.growth = o.growthFactor ?? 2;
    this.backoff = o.backoffFactor ?? 0.5;
    this.interval = o.growthInterval;
    this.minScale = o.minScale ?? 1;
  }

  /** Whether an overflow at the current scale can still be answered by backing off. */
  canBackOff(): boolean {
    return this.scale * this.backoff >= this.minScale;
  }

  /** Records one step; returns how the scale changed. */
  update(overflow: boolean): 'backoff' | 'growth' | null {
    if (overflow) {
      this.goodSteps = 0;
      if (!this.canBackOff()) return null;
      this.scale *= this.backoff;
      return 'backoff';
    }
    if (++this.goodSteps >= this.interval) {
      this.goodSteps = 0;
      this.scale *= this.growth;
      return 'growth';
    }
    return null;
  }

  state(): LossScalerState {
    return { scale: this.scale, goodSteps: this.goodSteps };
  }

  restore(s: LossScalerState): void {
    this.scale = s.scale;
    this.goodSteps = s.goodSteps;
  }
}
