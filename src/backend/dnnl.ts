// oneDNN matmul through koffi (build/libathanor_dnnl.so, linked with libdnnl; see
// native/dnnl/matmul-dnnl.c). A primitive is created once per (input dtype, shape,
// transposes, leading dimensions, alpha, beta) and cached, so creation (~0.1-1 ms)
// is paid once per shape; a GEMM is then one FFI call.
//
// Without libdnnl (or with ATHANOR_BACKEND=reference) `dnnl()` is null and callers use
// OpenBLAS on fp32 copies; a one-time notice says so.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { koffi, forcedReference, projectRoot, type KoffiLib } from './native.js';

/** Input element types of a mixed-precision GEMM (the output is always fp32). */
export type GemmInDType = 'float32' | 'bfloat16' | 'float16';
const DT_CODE: Record<GemmInDType, number> = { float32: 0, bfloat16: 1, float16: 2 };

type Handle = unknown;
interface DnnlFns {
  create: (dt: number, ta: number, tb: number, m: number, n: number, k: number, lda: number, ldb: number, ldc: number, alpha: number, beta: number) => Handle | null;
  exec: (h: Handle, a: Float32Array | Uint16Array, b: Float32Array | Uint16Array, c: Float32Array) => number;
  impl: (h: Handle) => string;
  isa: () => number;
  version: () => number;
}

let fns: DnnlFns | null | undefined;
let loadNote = '';

/** The bound oneDNN shim, or null (with the reason in dnnlStatus()). */
export function dnnl(): DnnlFns | null {
  if (fns !== undefined) return fns;
  fns = null;
  if (forcedReference()) { loadNote = 'ATHANOR_BACKEND=reference'; return null; }
  if (process.env.ATHANOR_DNNL === '0') { loadNote = 'ATHANOR_DNNL=0'; return null; }
  const k = koffi();
  const path = process.env.ATHANOR_DNNL_LIB ?? join(projectRoot(), 'build', 'libathanor_dnnl.so');
  if (!k || !existsSync(path)) {
    loadNote = `${path} not built (install libdnnl-dev, then npm install)`;
    return null;
  }
  try {
    const lib = k.load(path) as KoffiLib;
    fns = {
      create: lib.func('void *athn_dnnl_mm_create(int, int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float)'),
      exec: lib.func('int athn_dnnl_mm_exec(void *, const void *, const void *, _Inout_ float *)'),
      impl: lib.func('const char *athn_dnnl_mm_impl(void *)'),
      isa: lib.func('int athn_dnnl_cpu_isa()'),
      version: lib.func('int athn_dnnl_version()'),
    };
  } catch (e) {
    loadNote = `could not load ${path}: ${(e as Error).message}`;
    fns = null;
  }
  return fns;
}

export function dnnlStatus(): { available: boolean; version: string | null; isa: string | null; note: string } {
  const f = dnnl();
  if (!f) return { available: false, version: null, isa: null, note: loadNote };
  const v = f.version();
  return { available: true, version: `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`, isa: isaName(f.isa()), note: '' };
}

/** oneDNN's dnnl_cpu_isa_t bit set for this CPU (null without oneDNN). */
export function dnnlIsaBits(): number | null {
  const f = dnnl();
  return f ? f.isa() : null;
}

// dnnl_cpu_isa_t values of oneDNN 2.6 (dnnl_types.h): each is a bit set of features.
const ISA_NAMES: [number, string][] = [
  [0x3e7, 'avx512_core_amx'], [0x7e7, 'avx512_core_fp16'], [0xe7, 'avx512_core_bf16'], [0x67, 'avx512_core_vnni'],
  [0x27, 'avx512_core'], [0x17, 'avx512_mic_4ops'], [0xf, 'avx512_mic'], [0x407, 'avx2_vnni'], [0x7, 'avx2'], [0x3, 'avx'], [0x1, 'sse41'],
];
function isaName(v: number): string {
  for (const [bits, name] of ISA_NAMES) if (v === bits) return name;
  return `isa 0x${v.toString(16)}`;
}

export interface DnnlMatmul {
  handle: Handle;
  /** oneDNN's implementation name, e.g. "brg:avx512_core_bf16" or "ref:any". */
  impl: string;
}

const cache = new Map<string, DnnlMatmul | null>();

/** The cached primitive for this GEMM, created on first use; null when oneDNN has no implementation. */
export function dnnlMatmul(dt: GemmInDType, ta: boolean, tb: boolean, m: number, n: number, k: number,
  lda: number, ldb: number, ldc: number, alpha: number, beta: number): DnnlMatmul | null {
  const f = dnnl();
  if (!f) return null;
  const key = `${dt}|${+ta}${+tb}|${m}|${n}|${k}|${lda}|${ldb}|${ldc}|${alpha}|${beta}`;
  let p = cache.get(key);
  if (p === undefined) {
    const h = f.create(DT_CODE[dt], +ta, +tb, m, n, k, lda, ldb, ldc, alpha, beta);
    p = h ? { handle: h, impl: f.impl(h) } : null;
    cache.set(key, p);
  }
  return p;
}

/** Runs a cached primitive; a, b, c are already offset (subarrays). */
export function dnnlExec(p: DnnlMatmul, a: Float32Array | Uint16Array, b: Float32Array | Uint16Array, c: Float32Array): void {
  if (dnnl()!.exec(p.handle, a, b, c) !== 0) throw new Error(`oneDNN matmul (${p.impl}) failed to execute`);
}

export function dnnlPrimitiveCount(): number {
  return cache.size;
}
