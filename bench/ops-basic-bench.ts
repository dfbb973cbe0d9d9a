// Element-wise ops in GB/s against PyTorch (bench/peers/torch-ops.py: same byte formulas,
// same timing method: reps of `inner` back-to-back calls, inner doubled until a rep
// lasts >= 20 ms, warm-ups, median of >= 7 reps), plus per-op dispatch overhead.
//   add        12·N bytes  c = a + b                   ("alloc": the op, output from the pool;
//                                                        "out": the kernel into a preallocated c)
//   gelu        8·N bytes  y = gelu_tanh(x)             (the op)
//   bf16_cast   6·N bytes  y = x.to(bfloat16)           ("alloc" and "out" like add)
//   dispatch    µs per a + b on 16 floats: the full op path incl. output tensor and scope
// Run: node dist/bench/ops-basic-bench.js [threads,...]   (default 1,2)
import { pathToFileURL } from 'node:url';
import { Rng } from '../src/core/rng.js';
import { empty, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { noGrad } from '../src/autograd/tape.js';
import { kernelThreads, setKernelThreads } from '../src/backend/dispatch.js';
import { nativeBasic } from '../src/backend/native-basic.js';
import { BIN, binaryInto, castContig } from '../src/backend/basic-kernels.js';
import { add } from '../src/ops/elementwise.js';
import { cast, gelu } from '../src/ops/unary.js';
import { runTorchPeer } from './torch-peer.js';
import { threadListArg, timeit } from './kernel-timing.js';

export interface OpsBasicRow {
  op: 'add' | 'gelu' | 'bf16_cast' | 'dispatch';
  variant: 'alloc' | 'out';
  /** Elements N. */
  size: number;
  threads: number;
  athanorGBs: number | null;
  torchGBs?: number;
  /** athanor / torch (> 1: Athanor faster). */
  ratio?: number;
  /** dispatch rows: microseconds per op. */
  athanorUs?: number;
  torchUs?: number;
}

export interface OpsBasicBenchOptions {
  threads?: number[];
  sizes?: number[];
  reps?: number;
  minRepSeconds?: number;
  log?: (line: string) => void;
}

const BYTES = { add: 12, gelu: 8, bf16_cast: 6 } as const;

/** Inputs come from the buffer pool like the activations they stand for. */
function randn(n: number, rng: Rng): Tensor {
  const t = empty([n], 'float32').keep();
  rng.fillNormal(t.data as Float32Array);
  return t;
}

interface PeerKey { op: string; variant: string; n: number }

function torchPeer(sizes: number[], threads: number, reps: number, minRep: number, log: (s: string) => void): Map<string, number> {
  const ops: Record<string, unknown>[] = [{ op: 'dispatch' }];
  for (const n of sizes) ops.push({ op: 'add', n }, { op: 'gelu', n }, { op: 'bf16_cast', n });
  const out = new Map<string, number>();
  for (const rec of runTorchPeer(ops, { threads, reps, minRep, log, timeoutMs: 900_000 })) {
    if (rec.op === 'dispatch' && rec.us_per_op !== undefined) out.set(key({ op: 'dispatch', variant: 'alloc', n: 16 }), rec.us_per_op);
    else if (rec.gb_per_s !== undefined && rec.shape?.n !== undefined) out.set(key({ op: rec.op, variant: rec.variant ?? 'alloc', n: rec.shape.n }), rec.gb_per_s);
  }
  return out;
}

function key(k: PeerKey): string {
  return `${k.op}/${k.variant}/${k.n}`;
}

/** Seconds per op on the Athanor side. */
function athanorSeconds(op: 'add' | 'gelu' | 'bf16_cast', variant: 'alloc' | 'out', n: number, reps: number, minRep: number): number {
  const rng = new Rng(1);
  const a = randn(n, rng), b = randn(n, rng);
  const fn: () => void = op === 'add'
    ? variant === 'alloc' ? () => noGrad(() => scope(() => { add(a, b); })) : (() => { const c = randn(n, rng); return () => binaryInto(BIN.add, c, a, b); })()
    : op === 'gelu' ? () => noGrad(() => scope(() => { gelu(a); }))
    : variant === 'alloc' ? () => noGrad(() => scope(() => { cast(a, 'bfloat16'); }))
    : (() => { const y = empty([n], 'bfloat16').keep().data; const x = a.data as Float32Array; return () => castContig(n, 'float32', x, 0, 'bfloat16', y, 0); })();
  return timeit(fn, reps, minRep, 1 << 24).median;
}

/** Microseconds per a + b on 16 floats through the public op (tensor creation, kernel, scope disposal). */
function dispatchMicros(reps: number, minRep: number): number {
  const rng = new Rng(2);
  const a = randn(16, rng), b = randn(16, rng);
  return timeit(() => scope(() => { add(a, b); }), reps, minRep, 1 << 24).median * 1e6;
}

export async function runOpsBasicBench(opts: OpsBasicBenchOptions = {}): Promise<OpsBasicRow[]> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const reps = Math.max(7, opts.reps ?? 7), minRep = opts.minRepSeconds ?? 0.02;
  const sizes = opts.sizes ?? [1 << 20, 1 << 22, 1 << 24];
  if (!nativeBasic()) log('warning: native basic kernels not built; timing the TypeScript reference kernels');
  const rows: OpsBasicRow[] = [];
  const before = kernelThreads();
  try {
    for (const threads of opts.threads ?? [1, 2]) {
      setKernelThreads(threads);
      const peer = torchPeer(sizes, threads, reps, minRep, log);
      log(`threads ${threads}: op         variant  N           Athanor GB/s   PyTorch GB/s   ratio`);
      for (const n of sizes) {
        for (const [op, variant] of [['add', 'alloc'], ['add', 'out'], ['gelu', 'alloc'], ['bf16_cast', 'alloc'], ['bf16_cast', 'out']] as const) {
          const sec = athanorSeconds(op, variant, n, reps, minRep);
          const gbs = (BYTES[op] * n) / sec / 1e9;
          const tg = peer.get(key({ op, variant, n }));
          const row: OpsBasicRow = { op, variant, size: n, threads, athanorGBs: gbs };
          if (tg !== undefined) { row.torchGBs = tg; row.ratio = gbs / tg; }
          rows.push(row);
          log(`  ${op.padEnd(10)} ${variant.padEnd(7)} ${String(n).padEnd(10)} ${gbs.toFixed(2).padStart(12)}   ${tg === undefined ? '             -' : tg.toFixed(2).padStart(12)}   ${row.ratio === undefined ? '-' : row.ratio.toFixed(2) + 'x'}`);
        }
      }
      const us = dispatchMicros(reps, minRep);
      const tus = peer.get(key({ op: 'dispatch', variant: 'alloc', n: 16 }));
      rows.push({ op: 'dispatch', variant: 'alloc', size: 16, threads, athanorGBs: null, athanorUs: us, ...(tus !== undefined ? { torchUs: tus } : {}) });
      log(`  dispatch (a + b, 16 floats): Athanor ${us.toFixed(3)} µs/op, PyTorch ${tus === undefined ? '-' : tus.toFixed(3) + ' µs/op'}`);
    }
  } finally {
    setKernelThreads(before);
  }
  return rows;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const threads = threadListArg(process.argv[2], 'ops-basic-bench');
  await runOpsBasicBench({ threads });
}
