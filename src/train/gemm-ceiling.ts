// The GEMM ceiling MFU is measured against: what OpenBLAS's sgemm reaches on this
// machine with the current thread count, measured once per process (~0.2 s).
import { gemm as gemmF32 } from '../backend/blas.js';
import { gemmLowp } from '../backend/gemm-lowp.js';
import type { Precision } from '../backend/precision.js';

const cache = new Map<Precision, number>();

/** GEMM FLOP/s ceiling of `precision` (bf16/fp16: the mixed-precision GEMM training uses). */
export function measureGemmCeiling(n = 1024, reps = 8, precision: Precision = 'fp32'): number {
  const cached = cache.get(precision);
  if (cached !== undefined) return cached;
  const kind = precision === 'bf16' ? 'bfloat16' : precision === 'fp16' ? 'float16' : null;
  const a = new Float32Array(n * n).fill(0.5), b = new Float32Array(n * n).fill(0.25), c = new Float32Array(n * n);
  const a16 = new Uint16Array(n * n).fill(kind === 'bfloat16' ? 0x3f00 : 0x3800), b16 = new Uint16Array(n * n).fill(kind === 'bfloat16' ? 0x3e80 : 0x3400);
  const gemm = (..._: unknown[]) => kind
    ? gemmLowp(kind, false, true, n, n, n, 1, a16, 0, n, b16, 0, n, 0, c, 0, n)
    : gemmF32(false, true, n, n, n, 1, a, 0, n, b, 0, n, 0, c, 0, n);
  // Warm-up wakes OpenBLAS's threads; the fastest rep is the ceiling (slower ones saw other load).
  for (let w = 0; w < 2; w++) gemm();
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    gemm();
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((x, y) => x - y);
  const ceiling = (2 * n ** 3) / times[0]!;
  cache.set(precision, ceiling);
  return ceiling;
}
