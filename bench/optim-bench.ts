// Optimizer kernels in GB/s against PyTorch (bench/peers/torch-ops.py, op "adamw":
// torch.optim.AdamW lr 1e-3 betas (0.9, 0.95) eps 1e-8 wd 0.1 on one flat float32
// parameter of N; the best of its single-tensor and foreach variants). Same byte
// formula (28 * N: read p, g, m, v; write p, m, v) and timing method: reps of
// `inner` back-to-back steps, inner doubled until a rep lasts >= 20 ms, warm-ups,
// median of >= 7 reps. The Athanor side is a full AdamW.step() (one fused native
// kernel per parameter). The global grad norm (4 * N bytes: read g once) is
// reported without a peer: torch-ops.py has no grad-norm op.
// Run: node dist/bench/optim-bench.js [threads,...]   (default 1,2)
import { pathToFileURL } from 'node:url';
import { Rng } from '../src/core/rng.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { setKernelThreads } from '../src/backend/dispatch.js';
import { nativeOptim } from '../src/backend/native-optim.js';
import { AdamW, gradNorm } from '../src/optim/index.js';
import { runTorchPeer } from './torch-peer.js';
import { threadListArg, timeit } from './kernel-timing.js';

export interface OptimBenchRow {
  op: 'adamw' | 'grad_norm';
  n: number;
  threads: number;
  bytes: number;
  athanorGBps: number;
  torchGBps: number | null;
  /** athanor / torch (> 1: Athanor faster). */
  ratio: number | null;
}

export interface OptimBenchOptions {
  threads?: number[];
  sizes?: number[];
  reps?: number;
  minRepSeconds?: number;
  log?: (line: string) => void;
}

const SIZES = [1 << 20, 1 << 22, 1 << 24];

function flatParam(n: number, rng: Rng): Tensor {
  const d = new Float32Array(n);
  rng.fillNormal(d);
  const p = fromStorage(d, [n], 'float32').keep();
  p.requiresGrad = true;
  const g = new Float32Array(n);
  rng.fillNormal(g, 0, 1e-3);
  p.grad = fromStorage(g, [n], 'float32').keep();
  return p;
}

function torchAdamw(sizes: number[], threads: number, reps: number, minRep: number, log: (s: string) => void): Map<number, number> {
  const out = new Map<number, number>();
  for (const rec of runTorchPeer(sizes.map((n) => ({ op: 'adamw', n })), { threads, reps, minRep, log })) {
    if (rec.op === 'adamw' && rec.variant === 'best' && rec.shape?.n !== undefined && rec.gb_per_s !== undefined) out.set(rec.shape.n, rec.gb_per_s);
  }
  return out;
}

export async function runOptimBench(opts: OptimBenchOptions = {}): Promise<OptimBenchRow[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const reps = Math.max(7, opts.reps ?? 7), minRep = opts.minRepSeconds ?? 0.02;
  const sizes = opts.sizes ?? SIZES;
  if (!nativeOptim()) log('warning: native optimizer kernels not built; timing the TypeScript reference kernels');
  const rows: OptimBenchRow[] = [];
  for (const threads of opts.threads ?? [1, 2]) {
    setKernelThreads(threads);
    const peer = torchAdamw(sizes, threads, reps, minRep, log);
    log(`threads ${threads}: op         N            Athanor GB/s   PyTorch GB/s   ratio`);
    for (const n of sizes) {
      const rng = new Rng(1);
      const p = flatParam(n, rng);
      const opt = new AdamW([p], { lr: 1e-3, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.1 });
      const emit = (op: OptimBenchRow['op'], bytes: number, sec: number, tg: number | null) => {
        const gbps = bytes / sec / 1e9;
        const row: OptimBenchRow = { op, n, threads, bytes, athanorGBps: gbps, torchGBps: tg, ratio: tg ? gbps / tg : null };
        rows.push(row);
        log(`  ${op.padEnd(10)} ${String(n).padEnd(12)} ${gbps.toFixed(2).padStart(12)}   ${tg === null ? '           -' : tg.toFixed(2).padStart(12)}   ${row.ratio === null ? '-' : row.ratio.toFixed(2) + 'x'}`);
      };
      emit('adamw', 28 * n, timeit(() => opt.step(), reps, minRep).median, peer.get(n) ?? null);
      let sink = 0;
      emit('grad_norm', 4 * n, timeit(() => { sink += gradNorm([p]); }, reps, minRep).median, null);
      if (!Number.isFinite(sink)) log('grad norm overflowed');
    }
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const threads = threadListArg(process.argv[2], 'optim-bench');
  await runOptimBench({ threads });
}
