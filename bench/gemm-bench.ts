// Athanor matmul (the full op path: shape checks, layout analysis, output from the
// buffer pool, under noGrad and in a scope) against a bare cblas_sgemm call through
// koffi into a preallocated output, on the same OpenBLAS. The ratio is the overhead
// of the op path; the goal is >= 0.97.
// Each rep runs Athanor then direct (interleaved, so drift hits both), `inner` calls
// each with inner chosen so a rep lasts >= 20 ms; median over reps.
// Run: node dist/bench/gemm-bench.js [reps]
import { pathToFileURL } from 'node:url';
import { Rng } from '../src/core/rng.js';
import { fromStorage } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { noGrad } from '../src/autograd/tape.js';
import { openblas } from '../src/backend/native.js';
import { setBlasThreads } from '../src/backend/blas.js';
import { matmul } from '../src/ops/matmul.js';

export interface GemmBenchRow {
  m: number;
  k: number;
  n: number;
  form: 'NN' | 'NT' | 'TN';
  threads: number;
  athanorGflops: number;
  directGflops: number;
  /** direct time / athanor time on medians (1 = no overhead). */
  ratio: number;
  /** The same on each side's fastest rep: steadier when other processes share the cores. */
  ratioMin: number;
}

export interface GemmBenchOptions {
  sizes?: [number, number, number][];
  forms?: ('NN' | 'NT' | 'TN')[];
  threads?: number[];
  reps?: number;
  minRepSeconds?: number;
  log?: (line: string) => void;
}

const SIZES: [number, number, number][] = [[256, 256, 256], [1024, 1024, 1024], [2048, 2048, 2048], [4096, 512, 2048]];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

function timeRep(fn: () => void, inner: number): number {
  const t = process.hrtime.bigint();
  for (let i = 0; i < inner; i++) fn();
  return Number(process.hrtime.bigint() - t) / 1e9 / inner;
}

export async function runGemmBench(opts: GemmBenchOptions = {}): Promise<GemmBenchRow[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const lib = openblas();
  if (!lib) {
    log('gemm-bench: OpenBLAS not found; nothing to compare');
    return [];
  }
  const sgemm = lib.func('void cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int, float, _Inout_ float *, int)');
  const reps = Math.max(5, opts.reps ?? 5), minRep = opts.minRepSeconds ?? 0.02;
  const rng = new Rng(3);
  const rows: GemmBenchRow[] = [];
  log('   M     K     N  form thr   Athanor GF/s   direct GF/s   ratio   ratio(best reps)');
  for (const threads of opts.threads ?? [1, 2]) {
    setBlasThreads(threads);
    for (const [m, k, n] of opts.sizes ?? SIZES) {
      for (const form of opts.forms ?? ['NN', 'NT', 'TN']) {
        const ta = form === 'TN', tb = form === 'NT';
        const ad = new Float32Array(m * k), bd = new Float32Array(k * n), cd = new Float32Array(m * n);
        rng.fillNormal(ad);
        rng.fillNormal(bd);
        const a = fromStorage(ad, ta ? [k, m] : [m, k], 'float32').keep();
        const b = fromStorage(bd, tb ? [n, k] : [k, n], 'float32').keep();
        const athanor = () => noGrad(() => scope(() => { matmul(a, b, { transA: ta, transB: tb }); }));
        const direct = () => sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, 1, ad, ta ? m : k, bd, tb ? k : n, 0, cd, n);
        athanor();
        direct();
        let inner = 1;
        while (timeRep(direct, inner) * inner < minRep && inner < 1 << 16) inner *= 2;
        timeRep(athanor, inner); // warm-up rep: JIT, pool, OpenBLAS thread start
        timeRep(direct, inner);
        const ta_: number[] = [], td: number[] = [];
        for (let r = 0; r < reps; r++) {
          ta_.push(timeRep(athanor, inner));
          td.push(timeRep(direct, inner));
        }
        const flops = 2 * m * n * k;
        const row: GemmBenchRow = {
          m, k, n, form, threads,
          athanorGflops: flops / median(ta_) / 1e9, directGflops: flops / median(td) / 1e9, ratio: median(td) / median(ta_),
          ratioMin: Math.min(...td) / Math.min(...ta_),
        };
        rows.push(row);
        log(`${String(m).padStart(5)} ${String(k).padStart(5)} ${String(n).padStart(5)}  ${form}  ${threads}  ${row.athanorGflops.toFixed(1).padStart(12)}  ${row.directGflops.toFixed(1).padStart(12)}   ${row.ratio.toFixed(3)}   ${row.ratioMin.toFixed(3)}`);
        a.dispose();
        b.dispose();
      }
    }
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runGemmBench({ reps: process.argv[2] ? Number(process.argv[2]) : undefined });
}
