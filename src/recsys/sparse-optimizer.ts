// Optimizers that run on the embedding server, one row at a time, with per-row
// state kept in slabs beside the rows. A row is only updated when it received a
// gradient in a push (duplicates already summed), so Adam is the "lazy"/SparseAdam
// variant: its bias correction uses a per-row step count, not the global step.

export type SparseOptimizerConfig =
  | { kind: 'sgd'; lr: number }
  | { kind: 'adagrad'; lr: number; eps: number; initialAccumulator: number }
  | { kind: 'adam'; lr: number; beta1: number; beta2: number; eps: number };

export type SparseOptimizerKind = SparseOptimizerConfig['kind'];

/** Float32 state values per row: Adagrad keeps the squared-gradient sum, Adam m then v. */
export function stateWidth(cfg: SparseOptimizerConfig, dim: number): number {
  switch (cfg.kind) {
    case 'sgd': return 0;
    case 'adagrad': return dim;
    case 'adam': return 2 * dim;
  }
}

export function initState(cfg: SparseOptimizerConfig, st: Float32Array, off: number, dim: number): void {
  const w = stateWidth(cfg, dim);
  const v = cfg.kind === 'adagrad' ? cfg.initialAccumulator : 0;
  st.fill(v, off, off + w);
}

/**
 * Applies one summed gradient `g[gOff .. gOff+dim)` to row `w[wOff ..)` with state
 * `st[sOff ..)`. `t` is the row's step count after this update (1 on its first).
 */
export function applyRow(
  cfg: SparseOptimizerConfig, dim: number,
  w: Float32Array, wOff: number, st: Float32Array, sOff: number,
  g: Float32Array, gOff: number, t: number,
): void {
  switch (cfg.kind) {
    case 'sgd': {
      const lr = cfg.lr;
      for (let j = 0; j < dim; j++) w[wOff + j] -= lr * g[gOff + j]!;
      return;
    }
    case 'adagrad': {
      // float32 arithmetic, every operation rounded (as PyTorch's float32 Adagrad and the
      // server's C kernel): a float op computed in double and rounded once is exact for
      // + - * / and sqrt, so fround after each one reproduces float32 bit for bit.
      const f = Math.fround, lr = f(cfg.lr), eps = f(cfg.eps);
      for (let j = 0; j < dim; j++) {
        const gj = g[gOff + j]!;
        const a = f(st[sOff + j]! + f(gj * gj));
        st[sOff + j] = a;
        w[wOff + j] = w[wOff + j]! - f(f(lr * gj) / f(f(Math.sqrt(a)) + eps));
      }
      return;
    }
    case 'adam': {
      const { lr, beta1: b1, beta2: b2, eps } = cfg;
      // PyTorch's arrangement: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
      const stepSize = lr / (1 - Math.pow(b1, t));
      const bc2Sqrt = Math.sqrt(1 - Math.pow(b2, t));
      const vOff = sOff + dim;
      for (let j = 0; j < dim; j++) {
        const gj = g[gOff + j]!;
        const m = b1 * st[sOff + j]! + (1 - b1) * gj;
        const v = b2 * st[vOff + j]! + (1 - b2) * gj * gj;
        st[sOff + j] = m;
        st[vOff + j] = v;
        w[wOff + j] -= (stepSize * Math.fround(m)) / (Math.sqrt(Math.fround(v)) / bc2Sqrt + eps);
      }
      return;
    }
  }
}

function num(o: Record<string, unknown>, k: string, def: number | undefined, where: string, lo = -Infinity, hi = Infinity): number {
  const v = o[k] ?? def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    throw new Error(`${where}: field '${k}' must be a finite number in [${lo}, ${hi}] (got ${JSON.stringify(o[k])})`);
  }
  return v;
}

/** Validates an optimizer description from JSON (config files, set-config requests, manifests). */
export function parseOptimizer(x: unknown, where: string): SparseOptimizerConfig {
  if (typeof x !== 'object' || x === null) throw new Error(`${where}: optimizer must be an object`);
  const o = x as Record<string, unknown>;
  switch (o.kind) {
    case 'sgd': return { kind: 'sgd', lr: num(o, 'lr', 0.01, where, 0) };
    case 'adagrad': return {
      kind: 'adagrad', lr: num(o, 'lr', 0.01, where, 0), eps: num(o, 'eps', 1e-10, where, 0),
      initialAccumulator: num(o, 'initialAccumulator', 0, where, 0),
    };
    case 'adam': return {
      kind: 'adam', lr: num(o, 'lr', 0.001, where, 0), beta1: num(o, 'beta1', 0.9, where, 0, 0.999999),
      beta2: num(o, 'beta2', 0.999, where, 0, 0.999999999), eps: num(o, 'eps', 1e-8, where, 0),
    };
    default: throw new Error(`${where}: field 'kind' must be 'sgd', 'adagrad' or 'adam' (got ${JSON.stringify(o.kind)})`);
  }
}
