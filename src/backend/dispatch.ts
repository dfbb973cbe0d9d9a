// Chooses native or reference kernels. A koffi call costs ~0.7 µs, so tiny tensors
// run the TypeScript loop, which the JIT makes faster than the crossing.
import type { DType } from '../core/dtype.js';
import { nativeKernels, type KoffiLib } from './native.js';

let minNative = Number(process.env.ATHANOR_NATIVE_MIN ?? 64);

/** Elements below which reference kernels are used even when native ones exist (tests set 0). */
export function setNativeMinElements(n: number): void {
  minNative = n;
}

export function nativeMinElements(): number {
  return minNative;
}

/** The native library when a float32 op of `n` elements should use it, else null. */
export function nativeFor(dtype: DType, n: number): KoffiLib | null {
  if (dtype !== 'float32' || n < minNative) return null;
  return nativeKernels();
}

let runtime: { setThreads: (n: number) => void; getThreads: () => number; hasOpenmp: () => number } | null | undefined;

function rt() {
  if (runtime !== undefined) return runtime;
  const lib = nativeKernels();
  runtime = lib
    ? {
        setThreads: lib.func('void athn_set_num_threads(int)'),
        getThreads: lib.func('int athn_get_num_threads()'),
        hasOpenmp: lib.func('int athn_has_openmp()'),
      }
    : null;
  return runtime;
}

/** Thread count for native element-wise kernels (OpenMP). */
export function setKernelThreads(n: number): void {
  rt()?.setThreads(n);
}

export function kernelThreads(): number {
  return rt()?.getThreads() ?? 1;
}
