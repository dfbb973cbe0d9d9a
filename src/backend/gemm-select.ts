// fp32 GEMM library choice per shape: OpenBLAS or oneDNN, whichever measured faster.
// ATHANOR_GEMM_F32 = openblas (default) | onednn | auto.
// - auto: the first call of each (transposes, m, n, k, leading dims, alpha, beta) times
//   both libraries on a scratch output (the real C is written once, by the winner) and
//   records the choice for the process (gemmChoices()). Tiny GEMMs (< 2 MFLOP) stay on
//   OpenBLAS: timing them costs more than any difference.
// - The default is openblas because a measured choice can differ between processes
//   under load, and the two libraries round differently: runs that resume in another
//   process would then not repeat bit for bit. bench/gemm-precision-bench.ts reports
//   both libraries per shape, so the choice can be made from measurements.
import { dnnlMatmul, dnnlExec, type DnnlMatmul } from './dnnl.js';

export type F32GemmLib = 'openblas' | 'onednn';
type Mode = 'openblas' | 'onednn' | 'auto';

let mode: Mode | undefined;
const choices = new Map<string, { lib: F32GemmLib; prim: DnnlMatmul | null; openblasS?: number; onednnS?: number }>();
const MIN_FLOPS = 2e6;

function currentMode(): Mode {
  if (mode !== undefined) return mode;
  const v = process.env.ATHANOR_GEMM_F32 ?? 'openblas';
  if (v !== 'openblas' && v !== 'onednn' && v !== 'auto') throw new Error(`ATHANOR_GEMM_F32: expected openblas, onednn or auto, got '${v}'`);
  return (mode = v);
}

/** Overrides ATHANOR_GEMM_F32 for this process (benchmarks, tests); clears recorded choices. */
export function setF32GemmMode(m: Mode): void {
  mode = m;
  choices.clear();
}

function timeOnce(fn: () => void): number {
  const t = performance.now();
  fn();
  return performance.now() - t;
}

/**
 * The oneDNN primitive to use for this fp32 GEMM, or null for OpenBLAS. `runBlas`
 * runs the OpenBLAS call into a given output (for timing on scratch).
 */
export function f32Dnnl(ta: boolean, tb: boolean, m: number, n: number, k: number, lda: number, ldb: number, ldc: number,
  alpha: number, beta: number, a: Float32Array, b: Float32Array, runBlas: (c: Float32Array, cOff: number) => void): DnnlMatmul | null {
  const md = currentMode();
  if (md === 'openblas') return null;
  if (md === 'onednn') return dnnlMatmul('float32', ta, tb, m, n, k, lda, ldb, ldc, alpha, beta);
  if (2 * m * n * k < MIN_FLOPS) return null;
  const key = `${+ta}${+tb}|${m}|${n}|${k}|${lda}|${ldb}|${ldc}|${alpha}|${beta}`;
  let ch = choices.get(key);
  if (!ch) {
    const prim = dnnlMatmul('float32', ta, tb, m, n, k, lda, ldb, ldc, alpha, beta);
    if (!prim) ch = { lib: 'openblas', prim: null };
    else {
      const scratch = new Float32Array(m * ldc);
      // One warm-up each, then the better of two timed calls each, alternating.
      runBlas(scratch, 0);
      dnnlExec(prim, a, b, scratch);
      let tBlas = Infinity, tDnnl = Infinity;
      for (let r = 0; r < 2; r++) {
        tBlas = Math.min(tBlas, timeOnce(() => runBlas(scratch, 0)));
        tDnnl = Math.min(tDnnl, timeOnce(() => dnnlExec(prim, a, b, scratch)));
      }
      ch = { lib: tDnnl < tBlas ? 'onednn' : 'openblas', prim, openblasS: tBlas / 1e3, onednnS: tDnnl / 1e3 };
    }
    choices.set(key, ch);
  }
  return ch.lib === 'onednn' ? ch.prim : null;
}

/** The recorded per-shape choices of auto mode (shape key → library and the timings it was chosen on). */
export function gemmChoices(): { shape: string; lib: F32GemmLib; openblasS?: number; onednnS?: number }[] {
  return [...choices].map(([shape, c]) => ({ shape, lib: c.lib, openblasS: c.openblasS, onednnS: c.onednnS }));
}

export function f32GemmMode(): Mode {
  return currentMode();
}
