// BLAS entry points: sgemm/dgemm through OpenBLAS, with a TypeScript reference GEMM
// as fallback and oracle. Offsets are element offsets into the given arrays (passed
// to C as subarray views, which koffi hands over without copying).
import { openblas } from './native.js';
import { f32Dnnl, f32GemmMode } from './gemm-select.js';
import { dnnlExec } from './dnnl.js';

const RowMajor = 101, NoTrans = 111, Trans = 112;

type Gemm = (order: number, ta: number, tb: number, m: number, n: number, k: number, alpha: number,
  a: Float32Array | Float64Array, lda: number, b: Float32Array | Float64Array, ldb: number, beta: number,
  c: Float32Array | Float64Array, ldc: number) => void;

interface BlasFns {
  sgemm: Gemm;
  dgemm: Gemm;
  saxpy: (n: number, alpha: number, x: Float32Array, incx: number, y: Float32Array, incy: number) => void;
  setThreads: (n: number) => void;
  getThreads: () => number;
}

let fns: BlasFns | null | undefined;
let threads = 0;

function blas(): BlasFns | null {
  if (fns !== undefined) return fns;
  const lib = openblas();
  if (!lib) return (fns = null);
  fns = {
    sgemm: lib.func('void cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int, float, _Inout_ float *, int)'),
    dgemm: lib.func('void cblas_dgemm(int, int, int, int, int, int, double, const double *, int, const double *, int, double, _Inout_ double *, int)'),
    saxpy: lib.func('void cblas_saxpy(int, float, const float *, int, _Inout_ float *, int)'),
    setThreads: lib.func('void openblas_set_num_threads(int)'),
    getThreads: lib.func('int openblas_get_num_threads()'),
  };
  const env = Number(process.env.ATHANOR_NUM_THREADS ?? process.env.OMP_NUM_THREADS ?? 0);
  if (env > 0) setBlasThreads(env);
  return fns;
}

export function hasBlas(): boolean {
  return blas() !== null;
}

/** Sets OpenBLAS's thread count explicitly (its default of "all cores" is wrong for multi-rank runs). */
export function setBlasThreads(n: number): void {
  const b = blas();
  threads = n;
  b?.setThreads(n);
}

export function blasThreads(): number {
  const b = blas();
  return b ? b.getThreads() : threads || 1;
}

/**
 * C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C, row-major, with leading
 * dimensions lda/ldb/ldc. beta = 1 accumulates, which backward uses for weight grads.
 */
export function gemm(
  transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: Float32Array | Float64Array, aOff: number, lda: number,
  b: Float32Array | Float64Array, bOff: number, ldb: number, beta: number,
  c: Float32Array | Float64Array, cOff: number, ldc: number,
): void {
  if (m === 0 || n === 0) return;
  const f = blas();
  if (f && a.constructor === b.constructor && b.constructor === c.constructor) {
    if (a instanceof Float32Array && f32GemmMode() !== 'openblas') {
      const av = aOff ? a.subarray(aOff) : a, bv = bOff ? (b as Float32Array).subarray(bOff) : b as Float32Array;
      const prim = f32Dnnl(transA, transB, m, n, k, lda, ldb, ldc, alpha, beta, av, bv, (cc, co) =>
        f.sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha, av, lda, bv, ldb, beta, co ? cc.subarray(co) : cc, ldc));
      if (prim) { dnnlExec(prim, av, bv, cOff ? (c as Float32Array).subarray(cOff) : c as Float32Array); return; }
    }
    const g = a instanceof Float32Array ? f.sgemm : f.dgemm;
    g(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, m, n, k, alpha,
      aOff ? a.subarray(aOff) : a, lda, bOff ? b.subarray(bOff) : b, ldb, beta, cOff ? c.subarray(cOff) : c, ldc);
    return;
  }
  gemmReference(transA, transB, m, n, k, alpha, a, aOff, lda, b, bOff, ldb, beta, c, cOff, ldc);
}

/** Reference GEMM; also the oracle for BLAS conformance tests. i-k-j loop order for cache use. */
export function gemmReference(
  transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
  a: ArrayLike<number>, aOff: number, lda: number,
  b: ArrayLike<number>, bOff: number, ldb: number, beta: number,
  c: { [i: number]: number }, cOff: number, ldc: number,
): void {
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const av = transA ? a[aOff + p * lda + i]! : a[aOff + i * lda + p]!;
      if (av === 0) continue;
      if (transB) for (let j = 0; j < n; j++) row[j]! += av * b[bOff + j * ldb + p]!;
      else {
        const base = bOff + p * ldb;
        for (let j = 0; j < n; j++) row[j]! += av * b[base + j]!;
      }
    }
    const cb = cOff + i * ldc;
    for (let j = 0; j < n; j++) c[cb + j] = alpha * row[j]! + (beta === 0 ? 0 : beta * c[cb + j]!);
  }
}

/** y += alpha·x over n contiguous elements. */
export function axpy(n: number, alpha: number, x: Float32Array | Float64Array, xOff: number, y: Float32Array | Float64Array, yOff: number): void {
  const f = blas();
  if (f && x instanceof Float32Array && y instanceof Float32Array && n >= 256) {
    f.saxpy(n, alpha, xOff ? x.subarray(xOff, xOff + n) : x, 1, yOff ? y.subarray(yOff, yOff + n) : y, 1);
    return;
  }
  for (let i = 0; i < n; i++) y[yOff + i]! += alpha * x[xOff + i]!;
}
