// The GEMM ceiling MFU is measured against: what OpenBLAS's sgemm reaches on this
// machine with the current thread count, measured once per process (~0.2 s).
import { gemm } from '../backend/blas.js';

let cached: number | undefined;

export function measureGemmCeiling(n = 768, reps = 4): number {
  if (cached !== undefined) return cached;
  const a = new Float32Array(n * n).fill(0.5), b = new Float32Array(n * n).fill(0.25), c = new Float32Array(n * n);
  gemm(false, true, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    gemm(false, true, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n);
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((x, y) => x - y);
  cached = (2 * n ** 3) / times[0]! ;
  return cached;
}
