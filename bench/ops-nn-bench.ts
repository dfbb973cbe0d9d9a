// Fused NN kernels in GB/s against PyTorch doing the same op (bench/peers/torch-ops.py,
// same byte formulas, same timing method: reps of `inner` back-to-back calls, inner
// chosen so a rep lasts >= 20 ms, 2 warm-ups, median of >= 7 reps).
// Athanor side: softmax and layerNorm forward are the ops (noGrad, in a scope, output
// from the buffer pool); the backward entries are the kernels the gradient rules run
// on a fresh gradient buffer; cross-entropy is the full op: forward + backward()
// through the tape, like torch's F.cross_entropy(...).backward().
// Run: node dist/bench/ops-nn-bench.js [threads,...]   (default 1,2)
import { pathToFileURL } from 'node:url';
import { Rng } from '../src/core/rng.js';
import { empty, fromStorage, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { setKernelThreads } from '../src/backend/dispatch.js';
import { setBlasThreads } from '../src/backend/blas.js';
import { nativeNn } from '../src/backend/native-nn.js';
import * as K from '../src/backend/nn-kernels.js';
import { crossEntropy, layerNorm, softmax } from '../src/ops/nn.js';
import { runTorchPeer } from './torch-peer.js';
import { threadListArg, timeit } from './kernel-timing.js';

export interface OpsNnRow {
  op: string;
  shape: Record<string, number>;
  threads: number;
  bytes: number;
  athanorGBps: number;
  torchGBps: number | null;
  /** athanor / torch on medians (> 1: Athanor faster). */
  ratio: number | null;
  /** The same on the fastest rep of each side: steadier when the machine is shared. */
  ratioMin: number | null;
}

export interface OpsNnBenchOptions {
  threads?: number[];
  reps?: number;
  minRepSeconds?: number;
  log?: (line: string) => void;
}

interface Spec {
  op: 'softmax' | 'softmax_bwd' | 'layernorm' | 'layernorm_bwd' | 'cross_entropy';
  rows: number;
  cols: number;
}

const SPECS: Spec[] = [
  { op: 'softmax', rows: 2048, cols: 8192 },
  { op: 'softmax', rows: 8 * 8 * 256, cols: 256 },
  { op: 'softmax_bwd', rows: 2048, cols: 8192 },
  { op: 'layernorm', rows: 2048, cols: 512 },
  { op: 'layernorm_bwd', rows: 2048, cols: 512 },
  { op: 'cross_entropy', rows: 2048, cols: 8192 },
];

function bytesOf(s: Spec): number {
  const n = s.rows * s.cols;
  return (s.op === 'softmax' || s.op === 'layernorm' ? 8 : 12) * n;
}

function torchSpec(s: Spec): Record<string, unknown> {
  if (s.op === 'softmax' || s.op === 'softmax_bwd') return { op: s.op, rows: s.rows, cols: s.cols };
  if (s.op === 'cross_entropy') return { op: s.op, n: s.rows, v: s.cols };
  return { op: s.op, n: s.rows, c: s.cols };
}

function shapeOf(s: Spec): Record<string, number> {
  const t = torchSpec(s);
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(t)) if (k !== 'op') out[k] = v as number;
  return out;
}

function randn(shape: number[], rng: Rng): Tensor {
  const d = new Float32Array(shape.reduce((a, b) => a * b, 1));
  rng.fillNormal(d);
  return fromStorage(d, shape, 'float32').keep();
}

/** Seconds per op on the Athanor side. */
function athanorSeconds(s: Spec, reps: number, minRep: number): { median: number; min: number } {
  const rng = new Rng(1);
  const { rows, cols } = s;
  switch (s.op) {
    case 'softmax': {
      const x = randn([rows, cols], rng);
      return timeit(() => noGrad(() => scope(() => { softmax(x); })), reps, minRep);
    }
    case 'softmax_bwd': {
      const y = noGrad(() => softmax(randn([rows, cols], rng))).keep(), dy = randn([rows, cols], rng);
      return timeit(() => scope(() => {
        const dx = empty([rows, cols]);
        K.softmaxBwd(y.data as Float32Array, dy.data as Float32Array, dx.data as Float32Array, rows, cols, false);
      }), reps, minRep);
    }
    case 'layernorm': {
      const x = randn([rows, cols], rng), w = randn([cols], rng), b = randn([cols], rng);
      return timeit(() => noGrad(() => scope(() => { layerNorm(x, w, b); })), reps, minRep);
    }
    case 'layernorm_bwd': {
      const x = randn([rows, cols], rng), w = randn([cols], rng), b = randn([cols], rng), dy = randn([rows, cols], rng);
      const y = new Float32Array(rows * cols), mean = new Float32Array(rows), rstd = new Float32Array(rows);
      K.layerNormFwd(x.data as Float32Array, w.data as Float32Array, b.data as Float32Array, y, mean, rstd, rows, cols, 1e-5);
      return timeit(() => scope(() => {
        // fresh gradients like torch's: dx overwritten, dw/db zeroed then accumulated
        const dx = empty([rows, cols]), dw = empty([cols]), db = empty([cols]);
        (dw.data as Float32Array).fill(0);
        (db.data as Float32Array).fill(0);
        K.layerNormBwd(dy.data as Float32Array, x.data as Float32Array, w.data as Float32Array, mean, rstd,
          dx.data as Float32Array, dw.data as Float32Array, db.data as Float32Array, rows, cols, false);
      }), reps, minRep);
    }
    case 'cross_entropy': {
      const logits = randn([rows, cols], rng);
      logits.requiresGrad = true;
      const t = new Int32Array(rows);
      for (let i = 0; i < rows; i++) t[i] = rng.int(cols);
      const targets = fromStorage(t, [rows], 'int32').keep();
      return timeit(() => scope(() => {
        if (logits.grad) { logits.grad.dispose(); logits.grad = null; }
        backward(crossEntropy(logits, targets));
      }), reps, minRep);
    }
  }
}

function torchRows(specs: Spec[], threads: number, reps: number, minRep: number, log: (s: string) => void): Map<string, { median: number; min: number }> {
  const out = new Map<string, { median: number; min: number }>();
  for (const rec of runTorchPeer(specs.map(torchSpec), { threads, reps, minRep, log })) {
    if (rec.median_s === undefined || rec.min_s === undefined || !rec.shape) continue;
    out.set(`${rec.op}:${JSON.stringify(rec.shape)}`, { median: rec.median_s, min: rec.min_s });
  }
  return out;
}

export async function runOpsNnBench(opts: OpsNnBenchOptions = {}): Promise<OpsNnRow[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const reps = Math.max(7, opts.reps ?? 7), minRep = opts.minRepSeconds ?? 0.02;
  if (!nativeNn()) log('warning: native NN kernels not built; timing the TypeScript reference kernels');
  const rows: OpsNnRow[] = [];
  for (const threads of opts.threads ?? [1, 2]) {
    setKernelThreads(threads);
    setBlasThreads(threads);
    const peer = torchRows(SPECS, threads, reps, minRep, log);
    log(`threads ${threads}: op            shape                      Athanor GB/s   PyTorch GB/s   ratio   (on best reps: GB/s, GB/s, ratio)`);
    for (const s of SPECS) {
      const sec = athanorSeconds(s, reps, minRep);
      const bytes = bytesOf(s);
      const gbps = bytes / sec.median / 1e9, gbpsMin = bytes / sec.min / 1e9;
      const shape = shapeOf(s);
      const t = peer.get(`${s.op}:${JSON.stringify(shape)}`) ?? null;
      const tg = t ? bytes / t.median / 1e9 : null, tgMin = t ? bytes / t.min / 1e9 : null;
      const row: OpsNnRow = {
        op: s.op, shape, threads, bytes, athanorGBps: gbps, torchGBps: tg,
        ratio: tg ? gbps / tg : null, ratioMin: tgMin ? gbpsMin / tgMin : null,
      };
      rows.push(row);
      const f = (v: number | null, w = 12) => (v === null ? '-'.padStart(w) : v.toFixed(2).padStart(w));
      log(`  ${s.op.padEnd(14)} ${JSON.stringify(shape).padEnd(26)} ${f(gbps)}   ${f(tg)}   ${row.ratio === null ? '  -  ' : row.ratio.toFixed(2) + 'x'}   (${f(gbpsMin, 6)}, ${f(tgMin, 6)}, ${row.ratioMin === null ? '-' : row.ratioMin.toFixed(2) + 'x'})`);
    }
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const threads = threadListArg(process.argv[2], 'ops-nn-bench');
  await runOpsNnBench({ threads });
}
