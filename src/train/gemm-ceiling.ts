// The GEMM ceiling MFU is measured against: what OpenBLAS's sgemm reaches on this
// machine with the current thread count, measured once per process (~0.2 s).
import { gemm } from '../backend/blas.js';

let cached: number | undefined;

export function measureGemmCeiling(n = 1024, reps = 8): number {
  if (cached !== undefined) return cached;
  const a = new Float32Array(n * n).fill(0.5), b = new Float32Array(n * n).fill(0.25), c = new Float32Array(n * n);
  // Warm-up wakes OpenBLAS's threads; the fastest rep is the ceiling (slower ones saw other load).
  for (let w = 0; w < 2; w++) gemm(false, true, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n);
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
