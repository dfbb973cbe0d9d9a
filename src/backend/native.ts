// Loads the native leaf libraries through koffi: Athanor's own kernel library
// (build/libathanor.so, compiled by `npm install`) and OpenBLAS. Either may be
// missing; callers then use the TypeScript reference kernels, and a one-time
// notice says so. ATHANOR_BACKEND=reference forces the reference path (tests use it
// to check the fallback). ATHANOR_REQUIRE_NATIVE=1 (set by CI) turns a missing
// library, OpenBLAS or kernel symbol into an error, so a failed compile cannot pass.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

// koffi is typed loosely on purpose: its declaration strings are checked at load time.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type KoffiLib = { func: (decl: string) => any };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Koffi = any;

let koffiMod: Koffi | null | undefined;
let kernelLib: KoffiLib | null | undefined;
let blasLibrary: KoffiLib | null | undefined;
const notices: string[] = [];

export function forcedReference(): boolean {
  return process.env.ATHANOR_BACKEND === 'reference';
}

export function koffi(): Koffi | null {
  if (koffiMod !== undefined) return koffiMod;
  try {
    koffiMod = require('koffi');
  } catch (e) {
    koffiMod = null;
    missing(`koffi could not be loaded (${(e as Error).message}); native kernels and OpenBLAS are unavailable`);
  }
  return koffiMod;
}

/** Project root: the directory holding package.json (dist/src/backend → ../../..). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = dirname(dir);
  }
  return process.cwd();
}

/**
 * OpenMP (our kernels) and OpenBLAS (GEMM) keep separate thread pools, and both spin
 * after finishing work by default (libgomp ~300k iterations, OpenBLAS 2^28 cycles).
 * A training step alternates kernel → GEMM → kernel, so each pool's spinning threads
 * steal the cores the other pool needs: measured 10x slower attention with 2 threads
 * on 2 cores. Both read these variables once, when their library is loaded, so they
 * are defaulted here (never overriding the user's) before the first load.
 */
function quietThreadPools(): void {
  if (process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined) process.env.GOMP_SPINCOUNT = '0';
  if (process.env.OPENBLAS_THREAD_TIMEOUT === undefined && process.env.GOTO_THREAD_TIMEOUT === undefined) process.env.OPENBLAS_THREAD_TIMEOUT = '4';
}

export function nativeKernels(): KoffiLib | null {
  if (kernelLib === null && requireError) throw requireError; // every caller fails, not only the first
  if (kernelLib !== undefined) return kernelLib;
  kernelLib = null;
  if (forcedReference()) return null;
  const k = koffi();
  if (!k) return null;
  const path = process.env.ATHANOR_NATIVE_LIB ?? join(projectRoot(), 'build', 'libathanor.so');
  if (!existsSync(path)) {
    missing(`native kernel library not found at ${path} (run \`npm install\` with a C compiler present); using TypeScript reference kernels, which are much slower`);
    return null;
  }
  quietThreadPools();
  try {
    kernelLib = k.load(path) as KoffiLib;
  } catch (e) {
    missing(`could not load ${path}: ${(e as Error).message}; using TypeScript reference kernels`);
  }
  return kernelLib;
}

export function openblas(): KoffiLib | null {
  if (blasLibrary === null && requireError) throw requireError;
  if (blasLibrary !== undefined) return blasLibrary;
  blasLibrary = null;
  if (forcedReference()) return null;
  const k = koffi();
  if (!k) return null;
  const candidates = [process.env.ATHANOR_BLAS_LIB, 'libopenblas.so.0', 'libopenblas.so', 'libopenblas.dylib'].filter(Boolean) as string[];
  quietThreadPools();
  for (const c of candidates) {
    try {
      blasLibrary = k.load(c) as KoffiLib;
      return blasLibrary;
    } catch { /* try the next name */ }
  }
  missing('OpenBLAS not found (Debian: apt-get install libopenblas0); matmul uses the TypeScript reference GEMM, about 20x slower');
  return null;
}

export function notice(msg: string): void {
  notices.push(msg);
  if (!process.env.ATHANOR_QUIET) process.stderr.write(`athanor: ${msg}\n`);
}

/** A missing native dependency: a notice, or an error under ATHANOR_REQUIRE_NATIVE=1. */
let requireError: Error | null = null;
function missing(msg: string): void {
  if (process.env.ATHANOR_REQUIRE_NATIVE === '1') throw (requireError = new Error(`ATHANOR_REQUIRE_NATIVE=1: ${msg}`));
  notice(msg);
}

export function backendNotices(): readonly string[] {
  return notices;
}

export function backendSummary(): { nativeKernels: boolean; openblas: boolean } {
  return { nativeKernels: nativeKernels() !== null, openblas: openblas() !== null };
}

/**
 * Binds one family of kernels (a `name: 'C declaration'` record) from the native library,
 * once. Null when the library is missing or forced off, when `enabled()` says no, or when
 * the library lacks these symbols (an older build): callers then use the TypeScript loops.
 */
export function nativeFamily<T>(decls: { [K in keyof T]: string }, enabled: () => boolean = () => true): () => T | null {
  let bound: T | null | undefined;
  return () => {
    if (bound !== undefined) return bound;
    bound = null;
    const lib = enabled() ? nativeKernels() : null;
    if (!lib) return bound;
    try {
      const out: Record<string, unknown> = {};
      for (const [k, d] of Object.entries(decls)) out[k] = lib.func(d as string);
      bound = out as T;
    } catch (e) {
      bound = null;
      missing(`the native library lacks a kernel (${(e as Error).message}); rebuild it with \`npm install\``);
    }
    return bound;
  };
}
