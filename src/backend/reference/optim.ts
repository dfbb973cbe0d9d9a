// TypeScript reference optimizer kernels: the float64 path, the fallback without the
// native library, and the oracle the native kernels are tested against. Same
// arguments and operation order as native/optim.c; arrays are addressed as
// array[offset + i] for i in [0, n); state arrays (m, v, buf, sum) start at 0.
export type FloatArray = Float32Array | Float64Array;

export interface AdamWScalars {
  /** 1 - lr * weightDecay */
  decay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** lr / (1 - beta1^t) */
  stepSize: number;
  /** sqrt(1 - beta2^t) */
  bc2Sqrt: number;
  gradScale: number;
}

export function adamwReference(p: FloatArray, pOff: number, g: FloatArray, gOff: number,
  m: FloatArray, v: FloatArray, n: number, s: AdamWScalars): void {
  const { decay, beta1, beta2, eps, stepSize, bc2Sqrt, gradScale } = s;
  const omb1 = 1 - beta1, omb2 = 1 - beta2;
  for (let i = 0; i < n; i++) {
    const gi = g[gOff + i]! * gradScale;
    const mi = beta1 * m[i]! + omb1 * gi;
    const vi = beta2 * v[i]! + omb2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    const denom = Math.sqrt(vi) / bc2Sqrt + eps;
    p[pOff + i] = p[pOff + i]! * decay - stepSize * mi / denom;
  }
}

export interface SgdScalars {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  /** The momentum buffer is empty: it becomes the first gradient, undamped (PyTorch). */
  first: boolean;
  gradScale: number;
}

export function sgdReference(p: FloatArray, pOff: number, g: FloatArray, gOff: number,
  buf: FloatArray | null, n: number, s: SgdScalars): void {
  const { lr, momentum, weightDecay: wd, nesterov, first, gradScale } = s;
  const omd = 1 - s.dampening;
  for (let i = 0; i < n; i++) {
    const d = g[gOff + i]! * gradScale + wd * p[pOff + i]!;
    if (buf === null || momentum === 0) {
      p[pOff + i] = p[pOff + i]! - lr * d;
      continue;
    }
    const b = first ? d : momentum * buf[i]! + omd * d;
    buf[i] = b;
    p[pOff + i] = p[pOff + i]! - lr * (nesterov ? d + momentum * b : b);
  }
}

export function adagradReference(p: FloatArray, pOff: number, g: FloatArray, gOff: number,
  sum: FloatArray, n: number, clr: number, wd: number, eps: number, gradScale: number): void {
  for (let i = 0; i < n; i++) {
    const d = g[gOff + i]! * gradScale + wd * p[pOff + i]!;
    const s = sum[i]! + d * d;
    sum[i] = s;
    p[pOff + i] = p[pOff + i]! - clr * d / (Math.sqrt(s) + eps);
  }
}

export function sumSquaresReference(x: FloatArray, off: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) {
    const v = x[off + i]!;
    s += v * v;
  }
  return s;
}

export function scaleReference(x: FloatArray, off: number, n: number, factor: number): void {
  for (let i = 0; i < n; i++) x[off + i]! *= factor;
}
