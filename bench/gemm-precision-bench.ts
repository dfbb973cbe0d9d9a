// GEMM GFLOP/s per transformer shape and precision, Athanor's libraries against
// PyTorch in the same invocation: OpenBLAS fp32, oneDNN fp32, oneDNN bf16 (native
// primitive, when the CPU has one), Athanor's bf16 GEMM as training runs it
// (gemmLowp: native oneDNN bf16 or widened to fp32), PyTorch fp32 and bf16 matmul.
// Rounds alternate Athanor (all shapes) and the PyTorch peer (all shapes); each
// number is the median over rounds of the best-of-3 inner reps. The machine's ISA
// (avx2 / avx512_bf16 / amx) and the load average before and after are recorded.
// Run: node dist/bench/gemm-precision-bench.js [--quick] [--threads N] [--json out.json]
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { gemm, setBlasThreads } from '../src/backend/blas.js';
import { setKernelThreads } from '../src/backend/dispatch.js';
import { projectRoot } from '../src/backend/native.js';
import { dnnlMatmul, dnnlExec, dnnlStatus } from '../src/backend/dnnl.js';
import { gemmLowp, to16 } from '../src/backend/gemm-lowp.js';
import { setF32GemmMode } from '../src/backend/gemm-select.js';
import { PYTHON } from './machine-info.js';

type Form = 'NN' | 'NT' | 'TN';
export type Shape = [m: number, n: number, k: number, form: Form, what: string];

// gpt-small (B8 × T256 = 2048 rows, C 512, F 2048, V 8192): forward and the backward forms.
export const GPT_SMALL_SHAPES: Shape[] = [
  [2048, 1536, 512, 'NT', 'qkv fwd'],
  [2048, 2048, 512, 'NT', 'fc fwd'],
  [2048, 512, 2048, 'NT', 'fc proj fwd'],
  [2048, 8192, 512, 'NT', 'lm_head fwd'],
  [2048, 512, 2048, 'NN', 'fc proj dX'],
  [2048, 512, 2048, 'TN', 'fc dW'],
  [256, 256, 64, 'NT', 'attn QK^T (one head)'],
];

export function cpuIsa(): { model: string; flags: string[] } {
  let txt = '';
  try { txt = readFileSync('/proc/cpuinfo', 'utf8'); } catch { /* not Linux */ }
  const flagLine = /^flags\s*:\s*(.+)$/m.exec(txt)?.[1] ?? '';
  const want = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_tile'];
  const have = new Set(flagLine.split(/\s+/));
  return { model: /^model name\s*:\s*(.+)$/m.exec(txt)?.[1] ?? cpus()[0]?.model ?? 'unknown', flags: want.filter((f) => have.has(f)) };
}

function best(fn: () => void, minRep: number): number {
  fn();
  let inner = 1;
  for (;;) {
    const t = performance.now();
    for (let i = 0; i < inner; i++) fn();
    if (performance.now() - t >= minRep * 1e3 || inner >= 4096) break;
    inner *= 2;
  }
  let b = Infinity;
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    for (let i = 0; i < inner; i++) fn();
    b = Math.min(b, (performance.now() - t) / 1e3 / inner);
  }
  return b;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const h = s.length >> 1; return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2; };

export interface GemmPrecisionRow {
  shape: string; m: number; n: number; k: number; form: Form;
  openblasF32: number; onednnF32: number | null; onednnBf16: number | null; onednnBf16Impl: string | null;
  athanorBf16: number; torchF32: number | null; torchBf16: number | null;
}

export async function runGemmPrecisionBench(o: { quick?: boolean; threads?: number; rounds?: number; log?: (s: string) => void } = {}) {
  const log = o.log ?? ((s: string) => console.log(s));
  const threads = o.threads ?? 2, rounds = o.rounds ?? (o.quick ? 3 : 5), minRep = o.quick ? 0.03 : 0.1;
  const shapes = o.quick ? GPT_SMALL_SHAPES.filter((s) => ['qkv fwd', 'fc proj dX', 'fc dW', 'attn QK^T (one head)'].includes(s[4])) : GPT_SMALL_SHAPES;
  setBlasThreads(threads);
  setKernelThreads(threads);
  setF32GemmMode('openblas');
  const isa = cpuIsa(), dn = dnnlStatus();
  const loadBefore = loadavg();
  log(`gemm-precision: ${isa.model}; ISA ${isa.flags.join(' ')}; oneDNN ${dn.available ? `${dn.version} (${dn.isa})` : `unavailable: ${dn.note}`}; ${threads} threads; load ${loadBefore.map((x) => x.toFixed(2)).join(' ')}`);
  const acc: Record<string, Record<string, number[]>> = {};
  const push = (s: string, col: string, gf: number) => ((acc[s] ??= {})[col] ??= []).push(gf);
  const impls: Record<string, string | null> = {};
  const peerOk = { ok: true };
  for (let r = 0; r < rounds; r++) {
    for (const [m, n, k, form, what] of shapes) {
      const ta = form === 'TN', tb = form === 'NT';
      const lda = ta ? m : k, ldb = tb ? k : n;
      const a = new Float32Array(m * k).map((_, i) => Math.sin(i)), b = new Float32Array(k * n).map((_, i) => Math.cos(i));
      const a16 = new Uint16Array(m * k), b16 = new Uint16Array(k * n), c = new Float32Array(m * n);
      to16('bfloat16', 1, m * k, a, 0, m * k, a16, 0, m * k);
      to16('bfloat16', 1, k * n, b, 0, k * n, b16, 0, k * n);
      const fl = 2 * m * n * k;
      push(what, 'openblasF32', fl / best(() => gemm(ta, tb, m, n, k, 1, a, 0, lda, b, 0, ldb, 0, c, 0, n), minRep) / 1e9);
      const pf = dnnlMatmul('float32', ta, tb, m, n, k, lda, ldb, n, 1, 0);
      if (pf) push(what, 'onednnF32', fl / best(() => dnnlExec(pf, a, b, c), minRep) / 1e9);
      const pb = dnnlMatmul('bfloat16', ta, tb, m, n, k, lda, ldb, n, 1, 0);
      impls[what] = pb?.impl ?? null;
      if (pb) push(what, 'onednnBf16', fl / best(() => dnnlExec(pb, a16, b16, c), minRep) / 1e9);
      push(what, 'athanorBf16', fl / best(() => gemmLowp('bfloat16', ta, tb, m, n, k, 1, a16, 0, lda, b16, 0, ldb, 0, c, 0, n), minRep) / 1e9);
    }
    if (peerOk.ok) {
      const spec = JSON.stringify(shapes.map(([m, n, k, form]) => [m, n, k, form]));
      const pr = spawnSync(PYTHON, [join(projectRoot(), 'bench', 'peers', 'torch-gemm-precision.py'), String(threads), String(minRep), spec],
        { encoding: 'utf8', timeout: 600_000 });
      if (pr.status !== 0) { peerOk.ok = false; log(`torch peer unavailable: ${(pr.stderr || pr.error?.message || '').trim().split('\n').pop()}`); }
      else {
        for (const line of pr.stdout.trim().split('\n')) {
          const j = JSON.parse(line) as { m: number; n: number; k: number; form: Form; dtype: string; gflops: number };
          const s = shapes.find(([m, n, k, f]) => m === j.m && n === j.n && k === j.k && f === j.form)!;
          push(s[4], j.dtype === 'float32' ? 'torchF32' : 'torchBf16', j.gflops);
        }
      }
    }
    log(`  round ${r + 1}/${rounds} done`);
  }
  const loadAfter = loadavg();
  const rows: GemmPrecisionRow[] = shapes.map(([m, n, k, form, what]) => {
    const col = (c: string) => (acc[what]?.[c]?.length ? median(acc[what]![c]!) : null);
    return { shape: what, m, n, k, form, openblasF32: col('openblasF32')!, onednnF32: col('onednnF32'), onednnBf16: col('onednnBf16'), onednnBf16Impl: impls[what] ?? null,
      athanorBf16: col('athanorBf16')!, torchF32: col('torchF32'), torchBf16: col('torchBf16') };
  });
  const f = (v: number | null) => (v === null ? '     n/a' : v.toFixed(1).padStart(8));
  log('shape                      M     N     K form  OpenBLAS-f32 oneDNN-f32 oneDNN-bf16 Athanor-bf16 torch-f32 torch-bf16  (GFLOP/s, median of rounds)');
  for (const r of rows) {
    log(`${r.shape.padEnd(22)} ${String(r.m).padStart(5)} ${String(r.n).padStart(5)} ${String(r.k).padStart(5)}  ${r.form}  ${f(r.openblasF32)}    ${f(r.onednnF32)}   ${f(r.onednnBf16)}    ${f(r.athanorBf16)}  ${f(r.torchF32)}  ${f(r.torchBf16)}`);
  }
  if (rows.every((r) => r.onednnBf16 === null)) log(`oneDNN bf16 matmul: no implementation on this CPU (ISA flags: ${isa.flags.join(' ')}); Athanor-bf16 is the widened fp32 path`);
  log(`load average before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`);
  return { machine: { cpu: isa.model, isaFlags: isa.flags, onednn: dn, threads }, loadBefore, loadAfter, rounds, rows };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const opt = (k: string) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : undefined; };
  const res = await runGemmPrecisionBench({ quick: args.includes('--quick'), threads: opt('--threads') ? Number(opt('--threads')) : undefined });
  const out = opt('--json');
  if (out) writeFileSync(out, JSON.stringify(res, null, 2));
}
