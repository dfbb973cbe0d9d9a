// `athanor plan --calibrate`: measures this machine (GEMM, attention, element-wise
// kernels, per-op overhead, 2-rank all-reduce) in well under a minute and writes a
// cluster spec whose every figure says "measured: ...". One device = one core (one
// rank with one BLAS and kernel thread), which is how the validation runs are taken.
import { spawnSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { gemm, setBlasThreads } from '../backend/blas.js';
import { setKernelThreads } from '../backend/dispatch.js';
import { fromStorage } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { add, attention, contiguous, crossEntropy, embedding, gelu, layerNorm, permute, reshape, slice, sum, transpose } from '../ops/index.js';
import { backward } from '../autograd/tape.js';
import { projectRoot } from '../backend/native.js';
import { atomicWriteFileSync } from '../io/atomic-write.js';
import { from16, to16 } from '../backend/gemm-lowp.js';
import { withPrecision } from '../backend/precision.js';
import { toRankMajor, vocabParallelCrossEntropy, type GroupCollectives } from '../ops/group.js';
import type { Tensor } from '../core/tensor.js';
import type { ClusterSpec } from './cluster.js';
import { Rng } from '../core/rng.js';
import { coRunSlowdown, opFixedCosts, pipelineActionCost } from './calibrate-overhead.js';
import { attentionTable, contention, gemmTables, interleaved, opPairRates, optimizerRate, type OpCase } from './calibrate-compute.js';

/** The median; of an even count, the mean of the middle two (the upper one alone biased every rate of a 2-rep measurement towards its slower run). */
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
};

/**
 * Seeded normal values × `scale`, as the data the kernels are measured on. Constant inputs
 * (fill(1)) measured some kernels up to 2× faster than on training data: a row-max loop
 * never mispredicts its branch on equal values, and exp() of a constant is one value.
 */
const rngData = new Rng(11);
function randn(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rngData.normal() * scale;
  return a;
}
/** An output gradient of n elements, made once per size (the first, warm-up call of a measurement: never timed). */
const grads = new Map<number, Float32Array>();
function gradData(n: number): Float32Array {
  let g = grads.get(n);
  if (!g) grads.set(n, (g = randn(n, 1e-3)));
  return g;
}

/**
 * CPU seconds of fn (user + system of this process). Everything measured here runs on one
 * thread, so CPU time is the time an uncontended core would take: on a shared machine the
 * wall clock also counts the time other processes held the core.
 */
function timeIt(fn: () => void, reps: number, warm = 2): number[] {
  for (let i = 0; i < warm; i++) fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const c0 = process.cpuUsage();
    fn();
    const d = process.cpuUsage(c0);
    ts.push(Math.max(1e-7, (d.user + d.system) / 1e6));
  }
  return ts;
}

function gemmRate(m: number, n: number, k: number, reps: number): { best: number; median: number } {
  const a = new Float32Array(m * k).fill(0.5), b = new Float32Array(k * n).fill(0.25), c = new Float32Array(m * n);
  const ts = timeIt(() => gemm(false, true, m, n, k, 1, a, 0, k, b, 0, k, 0, c, 0, n), reps);
  const f = 2 * m * n * k;
  return { best: f / Math.min(...ts), median: f / median(ts) };
}

export interface CalibrationResult { spec: ClusterSpec; file: string; seconds: number; log: string[] }

export async function calibrate(o: { out?: string; quick?: boolean } = {}): Promise<CalibrationResult> {
  const t0 = performance.now();
  const log: string[] = [];
  const loadBefore = loadavg();
  contention.length = 0;
  setBlasThreads(1);
  setKernelThreads(1);
  const reps = o.quick ? 3 : 6;
  // Peak: the fastest large square GEMM. The table: rates at the shapes GPT blocks produce
  // (tokens × width × width), which the planner interpolates between.
  const peak = gemmRate(1024, 1024, 1024, reps).best;
  const tables = gemmTables(reps);
  const points = tables.nt;
  const eff = median(points.filter(([m, n, k]) => m === 2048 && n >= 512 && k >= 512).map((p) => p[3])) / peak;
  log.push(`GEMM (1 thread): ceiling ${(peak / 1e9).toFixed(1)} GFLOP/s; ${points.length} shapes from ${(Math.min(...points.map((p) => p[3])) / 1e9).toFixed(1)} to ${(Math.max(...points.map((p) => p[3])) / 1e9).toFixed(1)} GFLOP/s`);
  // Attention: the real op, forward + backward, at a GPT-small head shape.
  const B = 2, H = 8, T = 256, D = 64;
  const qd = randn(B * H * T * D, 0.1);
  const keys = Math.min(T, (T + 128) / 2);
  // Share of the GEMM ceiling, under whatever precision is current (fp32 here, bf16 below).
  const attentionEfficiency = (): number => ((3 * 2 * B * H * T * keys * 2 * D) / median(timeIt(() => scope(() => {
    const q = fromStorage(qd, [B, H, T, D], 'float32');
    q.requiresGrad = true;
    const y = attention(q, q, q, { causal: true });
    backward(sum(y));
    q.grad?.dispose();
  }), reps))) / peak;
  const attEff = attentionEfficiency();
  const attTable = attentionTable(peak, reps);
  const pct = (v: number): string => (v * 100).toFixed(0);
  log.push(`attention forward + backward: ${pct(attEff)}% of the GEMM ceiling; by [T, D]: ${attTable.map(([t, d, f, b]) => `${t}/${d} ${pct(f)}/${pct(b)}%`).join(', ')} (forward/backward)`);
  log.push(`GEMM by role (median over shapes, GFLOP/s): forward NT ${(median(tables.nt.map((p) => p[3])) / 1e9).toFixed(1)}, input gradient NN ${(median(tables.nn.map((p) => p[3])) / 1e9).toFixed(1)}, weight gradient TN ${(median(tables.tn.map((p) => p[3])) / 1e9).toFixed(1)}`);
  const optRate = optimizerRate(reps * 2);
  log.push(`optimizer step (norm + AdamW + zeroing): ${(optRate / 1e9).toFixed(1)} GB/s of AdamW's bytes`);
  // Memory-bound classes: the real kernels, bytes as the meta trace counts them (inputs + output).
  const n = 1 << 20, rows = 2048, C = 512, V = 2048;
  const xd = randn(n), x16 = new Uint16Array(n);
  const x = fromStorage(xd, [n], 'float32');
  const xr = fromStorage(randn(rows * C), [rows, C], 'float32');
  const w = fromStorage(new Float32Array(C).fill(1), [C], 'float32');
  const logits = fromStorage(randn(rows * V), [rows, V], 'float32');
  const tgt = fromStorage(new Int32Array(rows).map(() => rngData.int(V)), [rows], 'int32');
  const table = fromStorage(randn(V * C, 0.02), [V, C], 'float32');
  const idx = fromStorage(new Int32Array(rows).map((_, i) => (i * 7) % V), [rows], 'int32');
  const seqTmp = new Float32Array(n);
  const rate = (bytes: number, fn: () => void): number => bytes / median(timeIt(() => scope(fn), reps * 2));
  const classBw: Record<string, number> = {
    elementwise: rate((3 + 2) * 4 * n, () => { gelu(add(x, x)); }), // add moves 3 arrays, gelu 2
    norm: rate(2 * 4 * rows * C + 8 * C, () => { layerNorm(xr, w, w); }),
    softmax: rate(4 * rows * V + 4 * rows + 4, () => { crossEntropy(logits, tgt); }),
    embedding: rate(4 * V * C + 4 * rows + 4 * rows * C, () => { embedding(table, idx); }),
    copy: rate(2 * 4 * n, () => { contiguous(transpose(reshape(x, [1024, 1024]))); }),
    // Mixed precision's operand casts and widening (6 bytes moved per element each way).
    convert: rate(2 * 6 * n, () => { to16('bfloat16', 1, n, xd, 0, n, x16, 0, n, 1); from16('bfloat16', 1, n, x16, 0, n, xd, 0, n); }),
    // Sequence parallelism's reorder of a (B, T, C) activation around each gather / reduce-scatter (ops/group.ts, sp-terms.ts): 16 rows, 2 ranks.
    sequenceAxisCopy: rate(2 * 4 * n, () => { toRankMajor(xd, seqTmp, 16, 2, n / 32); }),
  };
  // Tensor parallelism's loss (plans/gpt.ts): the vocab-parallel cross-entropy (ops/group.ts),
  // run here on one rank's half of the vocabulary (a one-rank group: its collectives are the
  // identity), forward + backward, bytes as the trace counts the cross-entropy it replaces.
  const one: GroupCollectives = { rank: 0, size: 1, allReduce: () => undefined, allGather: (i, o) => { o.set(i); }, reduceScatter: (i, o) => { o.set(i.subarray(0, o.length)); } };
  const Vl = V / 2, half = fromStorage(randn(rows * Vl), [rows, Vl], 'float32');
  const tgtHalf = fromStorage(new Int32Array(rows).map((_, i) => (i * 7) % Vl), [rows], 'int32');
  classBw.vocabParallelCrossEntropy = (2.5 * (4 * rows * Vl + 4 * rows + 4)) / median(timeIt(() => scope(() => {
    const z = fromStorage(half.data as Float32Array, half.shape, 'float32');
    z.requiresGrad = true;
    backward(vocabParallelCrossEntropy(z, tgtHalf, one, 0, Vl));
    z.grad?.dispose();
  }), reps * 2));
  const bw = classBw.elementwise!;
  // Per op, forward and backward apart (a class rate with one backward factor misprices the
  // ops of a class against each other: a residual add is far cheaper per byte than GELU, a
  // reshape's backward is a copy, cross-entropy's backward is not 1.5× its forward).
  // The copies models make: an attention block's head split (ops of nn/gpt.ts: a slice of
  // the fused QKV output, reshaped to heads, which copies runs of D contiguous floats, and
  // permuted), its backward the rules of all three; a 2-D transpose moves single floats and
  // is several times slower per byte, so it would misprice them.
  const Hh = 8, Dh = C / Hh;
  const qkv = fromStorage(randn(rows * 3 * C), [rows, 3 * C], 'float32');
  const headSplit = (t: Tensor): Tensor[] => [0, 1, 2].map((i) => permute(reshape(slice(reshape(t, [1, rows, 3, Hh, Dh]), 2, i, i + 1), [1, rows, Hh, Dh]), [0, 2, 1, 3]));
  // A residual add reads two distinct tensors (x + x reads one), both needing gradients.
  const other = fromStorage(randn(n), [n], 'float32');
  const opCases: Record<string, OpCase> = {
    add: { bytes: 3 * 4 * n, inputs: [x, other], fn: (a, b) => add(a!, b!) },
    gelu: { bytes: 2 * 4 * n, inputs: [x], fn: (t) => gelu(t!) },
    layerNorm: { bytes: 2 * 4 * rows * C + 8 * C, inputs: [xr], fn: (t) => layerNorm(t!, w, w) },
    crossEntropy: { bytes: 4 * rows * V + 4 * rows + 4, inputs: [logits], fn: (t) => crossEntropy(t!, tgt) },
    reshape: { bytes: 3 * 2 * 4 * rows * C, inputs: [qkv], fn: (t) => headSplit(t!) },
  };
  // The ops with 16-bit paths under train.precision=bf16 (nn-lowp kernels: they write a
  // 16-bit copy of what backward reads); the others run their fp32 kernels unchanged.
  const lowpOps = ['gelu', 'layerNorm', 'crossEntropy'];
  // Mixed precision (train.precision=bf16): the same ops take their 16-bit paths (packed
  // saved activations, bf16 attention probabilities, see backend/gemm-lowp.ts and
  // nn-lowp-kernels), measured forward + backward with bytes counted as the trace prices
  // them (forward bytes × (1 + the 1.5 backward factor of src/plan/trace.ts)).
  const lowp = withPrecision('bf16', () => {
    const fb = (bytesFwd: number, fn: (x: Tensor) => Tensor, input: Tensor): number => (bytesFwd * 2.5) / median(timeIt(() => scope(() => {
      const xi = fromStorage(input.data as Float32Array, input.shape, 'float32');
      xi.requiresGrad = true;
      const y = fn(xi);
      backward(y, y.size === 1 ? {} : { grad: fromStorage(gradData(y.size), y.shape, 'float32') });
      xi.grad?.dispose();
    }), reps * 2));
    return {
      attEff: attentionEfficiency(),
      attTable: attentionTable(peak, reps),
      opRates: opPairRates(Object.fromEntries(lowpOps.map((k) => [k, opCases[k]!])), reps * 2),
      rates: {
        elementwise: fb((3 + 2) * 4 * n, (t) => gelu(add(t, t)), x),
        norm: fb(2 * 4 * rows * C + 8 * C, (t) => layerNorm(t, w, w), xr),
        softmax: fb(4 * rows * V + 4 * rows + 4, (t) => crossEntropy(t, tgt), logits),
      } as Record<string, number>,
    };
  });
  log.push(`bf16 kernels: attention ${(lowp.attEff * 100).toFixed(0)}% of the GEMM ceiling; ${Object.entries(lowp.rates).map(([k, v]) => `${k} ${(v / 1e9).toFixed(1)}`).join(', ')} GB/s (forward + backward); per op ${Object.entries(lowp.opRates).map(([k, v]) => `${k} ${(v.fwd / 1e9).toFixed(1)}/${(v.bwd / 1e9).toFixed(1)}`).join(', ')} GB/s (forward / backward)`);
  const opRates = opPairRates(opCases, reps * 2);
  log.push(`per op (GB/s, forward / backward): ${Object.entries(opRates).map(([k, v]) => `${k} ${(v.fwd / 1e9).toFixed(1)}/${(v.bwd / 1e9).toFixed(1)}`).join(', ')}`);
  const s = fromStorage(new Float32Array(64).fill(1), [64], 'float32');
  const tiny = interleaved([() => scope(() => { for (let i = 0; i < 1000; i++) add(s, s); })], reps)[0]! / 1000;
  log.push(`memory-bound kernels (GB/s): ${Object.entries(classBw).map(([k, v]) => `${k} ${(v / 1e9).toFixed(1)}`).join(', ')}; ${(tiny * 1e6).toFixed(2)} µs per small op`);
  // The framework's fixed cost per traced op and the co-running slowdown (overhead-terms.ts).
  const fixed = opFixedCosts(reps);
  const co = await coRunSlowdown(o.quick ? 1 : 5, o.quick ? 8 : 16);
  const action = pipelineActionCost(reps);
  log.push(`framework overhead per traced op (a real GPT at compute ~0, ${fixed.opsForward} + ${fixed.opsBackward} ops): ${(fixed.forward * 1e6).toFixed(1)} µs forward, ${(fixed.backward * 1e6).toFixed(1)} µs backward; pipeline engine ${(action * 1e6).toFixed(1)} µs per action${co.factor !== null ? `; co-running on all ${co.cores} cores: main-thread CPU per probe step ×${co.cpuFactor!.toFixed(3)} (kept ×${co.factor.toFixed(3)}; wall ${(co.alone * 1e3).toFixed(1)} → ${(co.together * 1e3).toFixed(1)} ms, ×${co.wallFactor!.toFixed(3)}, which counts the machine's other load too)` : ''}${co.helperPerOp !== null ? `; V8 helper threads ${(co.helperPerOp * 1e6).toFixed(1)} CPU-µs per traced op` : ''}`);
    // 2-rank all-reduce through the launcher: α from 4 KiB, β from 16 MiB (ring: t = 2α + bytes/β for 2 ranks).
  const cli = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
  const script = join(projectRoot(), 'dist', 'src', 'plan', 'calibrate-comm.js');
  const r = spawnSync(process.execPath, [cli, 'launch', '--nproc-per-node', '2', '--', 'node', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ATHANOR_QUIET: '1' } });
  const m = /ATHANOR_CALIBRATE_COMM (\{.*\})/.exec(r.stdout ?? '');
  if (!m) throw new Error(`plan --calibrate: the all-reduce measurement failed:\n${((r.stdout ?? '') + (r.stderr ?? '')).slice(-1500)}`);
  const c = JSON.parse(m[1]!) as { small: number; large: number; cpuSmall: number; cpuLarge: number; cpuPoints: [number, number][]; tpPath: string; tpWall: [number, number][]; tpCpu: [number, number][]; tpSkew: number; epWall: [number, number][]; epCpu: [number, number][]; epSkew: number };
  const alpha = c.small / 2, beta = (16 * 2 ** 20) / Math.max(1e-9, c.large - 2 * alpha);
  // The same model for the CPU time a collective takes from a rank (all its threads).
  const cpuAlpha = c.cpuSmall / 2, cpuBeta = (16 * 2 ** 20) / Math.max(1e-9, c.cpuLarge - 2 * cpuAlpha);
  log.push(`all-reduce (2 ranks, same host): α ${(alpha * 1e6).toFixed(1)} µs, β ${(beta / 1e9).toFixed(2)} GB/s; CPU per rank α ${(cpuAlpha * 1e6).toFixed(1)} µs, β ${(cpuBeta / 1e9).toFixed(2)} GB/s`);
  log.push(`tensor-parallel all-reduce (${c.tpPath}): ${c.tpWall.map(([b, w], i) => `${b >= 2 ** 20 ? `${b / 2 ** 20} MiB` : `${b / 1024} KiB`} ${(w * 1e3).toFixed(3)} ms wall / ${(c.tpCpu[i]![1] * 1e3).toFixed(3)} ms CPU`).join(', ')}; ranks' skew ${(100 * c.tpSkew).toFixed(1)}% of the compute between collectives`);
  log.push(`expert-parallel all-to-all (parallel/expert-parallel-comm.ts): ${c.epWall.map(([b, w], i) => `${b >= 2 ** 20 ? `${b / 2 ** 20} MiB` : `${b / 1024} KiB`} ${(w * 1e3).toFixed(3)} ms wall / ${(c.epCpu[i]![1] * 1e3).toFixed(3)} ms CPU`).join(', ')}; ranks' skew ${(100 * c.epSkew).toFixed(1)}% of the compute between exchanges`);
  const sorted = [...contention].sort((a, b) => a - b);
  log.push(`contention: the median rep sat ${(100 * sorted[sorted.length >> 1]!).toFixed(1)}% above the fastest (median over ${sorted.length} measurements; 90th percentile ${(100 * sorted[Math.floor(sorted.length * 0.9)]!).toFixed(1)}%); rates use the median`);
  const loadAfter = loadavg();
  const when = new Date().toISOString();
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const meas = (what: string): string => `measured (CPU time, 1 thread): ${what} by athanor plan --calibrate on ${when} (${cpu}; load ${loadBefore.map((v) => v.toFixed(2)).join('/')} before, ${loadAfter.map((v) => v.toFixed(2)).join('/')} after)`;
  const spec: ClusterSpec = {
    name: 'this-machine',
    description: `This machine, one device = one core (one rank, 1 BLAS/kernel thread): ${cpu}, ${cpus().length} logical CPUs`,
    nodes: { value: 1, source: 'measured: this host' },
    devicesPerNode: { value: cpus().length, source: 'measured: os.cpus().length (one rank per core)' },
    device: {
      name: `${cpu} (1 core)`,
      memoryBytes: { value: Math.floor(totalmem() / cpus().length), source: 'measured: os.totalmem() divided among the ranks of the node' },
      peakFlops: { fp32: { value: peak, source: meas('fastest 1024³ sgemm, 1 thread') } },
      gemmEfficiency: { value: Math.min(1, eff), source: meas('median sgemm rate at m = 2048, n, k >= 512 over the ceiling') },
      attentionEfficiency: { value: Math.min(1, attEff), source: meas('attention() forward + backward at B2 H8 T256 D64, causal') },
      memBandwidth: { value: bw, source: meas('add() and gelu() on 1M floats, bytes read + written per second') },
      opOverhead: { value: tiny, source: meas('time per add() of 64 elements (op dispatch, tape and allocation), median of interleaved rounds') },
      overhead: {
        source: meas('src/plan/calibrate-overhead.ts'),
        opForward: { value: fixed.forward, source: meas(`CPU seconds of a real GPT forward (d 16, T 8, 2 sequences: compute ~0) over its ${fixed.opsForward} traced non-view ops, median of ${reps} reps of 50 steps`) },
        opBackward: { value: fixed.backward, source: meas(`CPU seconds of its backward over its ${fixed.opsBackward} traced backward ops`) },
        pipelineAction: { value: action, source: meas('CPU seconds of a forward kept alive by the pipeline engine (forwardDetached) and its backward + release, less the same in one scope, per action, on the compute-~0 GPT, median of interleaved reps') },
        ...(co.factor !== null ? { coRun: { source: meas(`main-thread CPU per step of the real GPT at gpt-tiny widths (2 blocks, 8 sequences, AdamW), ${co.cores} processes started together over 1 alone (median of the ratio of each round\'s two back-to-back runs, ${o.quick ? 1 : 5} rounds), at least 1`), points: [[co.cores, co.factor]] as [number, number][] } } : {}),
        ...(co.helperPerOp !== null ? { helperCpuPerOp: { value: co.helperPerOp, source: meas('CPU seconds per step of the probe process\'s threads other than the main thread (V8 GC and compiler workers), the probe alone, median of its runs, over the non-view ops of its traced step') } } : {}),
      },
      gemmTable: { source: meas('sgemm rate, median of interleaved rounds, 1 thread, at each [m, n, k]: points C = A·Bᵀ (forward), nn C = A·B (input gradient), tn C = Aᵀ·B accumulated (weight gradient)'), points, nn: tables.nn, tn: tables.tn },
      attentionTable: { source: meas('attention() causal, forward (recording) and backward (forward + backward less forward) apart, share of the GEMM ceiling at [T, D], median of interleaved rounds'), points: attTable },
      optimizerRate: { value: optRate, source: meas('the trainer optimizer step (gradient norm, fused AdamW, zeroGrad) over 4.2M parameters, AdamW bytes (28 per element) per second') },
      opRates: { source: meas('the real ops forward, and their backward rules (forward + backward less forward), at 1M floats / 2048 rows (add: two distinct inputs; reshape: the head split of a 2048 × 3·512 QKV output into q, k, v, forward = their copies, backward = the slice, reshape and permute rules); forward bytes as the meta trace counts them, per second, median of interleaved rounds'), rates: opRates },
      lowpKernels: {
        source: meas('the same kernels under train.precision=bf16, forward + backward (attention at B2 H8 T256 D64; add + gelu, layerNorm, crossEntropy; bytes as the meta trace counts the forward, times 2.5; opRates: gelu, layerNorm and crossEntropy forward and backward apart, as opRates)'),
        attentionEfficiency: lowp.attEff,
        attentionTable: lowp.attTable,
        opRates: lowp.opRates,
        rates: lowp.rates,
      },
      classBandwidth: { source: meas('the real kernels (gelu/add, layerNorm, crossEntropy, embedding, transpose copy, bfloat16 to16/from16 conversion, the sequence-parallel rank-major reorder; vocabParallelCrossEntropy forward + backward over 2.5× its forward bytes), bytes as the meta trace counts them'), rates: classBw },
    },
    network: {
      // Collectives are timed by the wall clock (their cost is waiting as much as copying).
      intra: { alpha: { value: alpha, source: meas('half the median 4 KiB all-reduce time, 2 ranks') }, beta: { value: beta, source: meas('16 MiB all-reduce, 2 ranks, ring model') } },
      inter: { alpha: { value: alpha, source: 'assumption: single host; inter-node equals intra-node' }, beta: { value: beta, source: 'assumption: single host; inter-node equals intra-node' } },
    },
    allocator: 'athanor-pool',
    commCpu: {
      alpha: { value: cpuAlpha, source: meas('half the mean CPU time (all threads of a rank) of a 4 KiB all-reduce through the trainer synchronous path (communication thread, parallel/thread-group.ts), 2 ranks') },
      beta: { value: cpuBeta, source: meas('16 MiB all-reduce, CPU time of a rank, ring model') },
      allReduce2: { source: meas('mean CPU seconds of a rank per 2-rank all-reduce at 4 KiB, 64 KiB, 1 MiB, 16 MiB (trainer synchronous path)'), points: c.cpuPoints },
      tpSync: {
        source: meas(`tensor parallelism's synchronous collectives as the trainer builds them (parallel/thread-group.ts, path '${c.tpPath}'): mean wall and CPU seconds of the busier rank per 2-rank all-reduce at 4 KiB, 64 KiB, 1 MiB, 16 MiB, back to back`),
        path: c.tpPath, wall: c.tpWall, cpu: c.tpCpu,
        skew: { value: c.tpSkew, source: meas('time a rank waits at a 1 MiB synchronous all-reduce beyond its own duration, after equal 8-GEMM stretches on both ranks, as a share of the GEMM time (40 rounds, busier rank)') },
      },
      epSync: {
        source: meas("expert parallelism's exchange as the trainer runs it (parallel/expert-parallel-comm.ts: synchronous all-to-all-v on its own communication thread, shared staging): mean wall and CPU seconds of the busier rank per balanced 2-rank exchange of 4 KiB, 64 KiB, 1 MiB, 16 MiB per rank, back to back"),
        wall: c.epWall, cpu: c.epCpu,
        skew: { value: c.epSkew, source: meas('time a rank waits at a 1 MiB expert exchange beyond its own duration, after equal 8-GEMM stretches on both ranks, as a share of the GEMM time (40 rounds, busier rank)') },
      },
    },
    commComputeShare: { value: 1, source: 'assumption: one device = one core, and the communication thread runs on the same cores (no DMA engine); bench/plan-validate-bench.ts shows its CPU time per step (ATHANOR_PLANVAL_THREADS=1)' },
    hostMemoryBytesPerNode: { value: totalmem(), source: 'measured: os.totalmem()' },
  };
  const file = o.out ?? join(projectRoot(), 'clusters', 'this-machine.json');
  mkdirSync(dirname(file), { recursive: true });
  atomicWriteFileSync(file, JSON.stringify(spec, null, 2) + '\n');
  return { spec, file, seconds: (performance.now() - t0) / 1000, log };
}
