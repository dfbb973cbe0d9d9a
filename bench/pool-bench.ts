// The caching buffer pool (src/core/buffer-pool.ts) on real training steps: a GPT
// preset (gpt-tiny, gpt-small) trained on random tokens with the pool enabled and
// disabled, in interleaved segments (ABBA order, so drift and thermal effects hit both).
// A step is what the trainer does with gradAccum 1: scope(() => { loss = model.loss(x, y);
// backward(loss) }), then buildOptimizer's step (global grad norm, clip 1.0, AdamW, zeroGrad).
// Each segment: switch the mode, pool.clear() (idle pooled buffers are not carried into
// the other mode), one untimed step (refills the pool when on), then `steps` timed steps
// with a yield to the event loop between them (the trainer awaits between steps too).
// Reported per mode: median/min ms per step, fresh buffers and bytes allocated per step
// (every allocation passes pool.onAllocate, in both modes; pool misses only count when
// on), GC pauses per step (PerformanceObserver 'gc' entries inside the segments), RSS
// and ArrayBuffer memory at segment ends. No timing is asserted.
// Run: node dist/bench/pool-bench.js [--quick] [--presets gpt-tiny,gpt-small] [--reps N] [--steps N] [--threads N]
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { pool } from '../src/core/buffer-pool.js';
import { Rng } from '../src/core/rng.js';
import { scope } from '../src/core/scope.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { backward } from '../src/autograd/tape.js';
import { setBlasThreads } from '../src/backend/blas.js';
import { setKernelThreads } from '../src/backend/dispatch.js';
import { nativeBasic } from '../src/backend/native-basic.js';
import { GPT } from '../src/nn/gpt.js';
import { presetConfig } from '../src/train/config.js';
import { buildOptimizer } from '../src/train/optim-setup.js';

export type PoolMode = 'on' | 'off';

export interface PoolBenchRow {
  preset: string;
  params: number;
  B: number;
  T: number;
  threads: number;
  mode: PoolMode;
  steps: number;
  msPerStep: number;
  msPerStepMin: number;
  /** Every timed step's milliseconds, in order. */
  stepMs: number[];
  /** Buffers newly allocated (not recycled) per step, from pool.onAllocate. */
  freshAllocsPerStep: number;
  /** pool.stats().allocatedBytes delta per step. */
  freshBytesPerStep: number;
  /** Pool hits and misses per step (0 when the pool is off: it does not count then). */
  hitsPerStep: number;
  missesPerStep: number;
  /** GC pause milliseconds and counts per step; null where 'gc' performance entries are unavailable. */
  gcMsPerStep: number | null;
  gcPerStep: number | null;
  majorGcPerStep: number | null;
  /** Medians and maxima over segment ends, MiB. */
  rssMiB: number;
  rssMaxMiB: number;
  arrayBuffersMiB: number;
}

export interface PoolBenchResult {
  rows: PoolBenchRow[];
  /** off ms/step ÷ on ms/step per preset (> 1: the pool makes steps faster). */
  speedup: Record<string, number>;
  peakRssMiB: number;
  notes: string[];
}

export interface PoolBenchOptions {
  presets?: string[];
  reps?: number;
  /** Timed steps per segment; default per preset (gpt-tiny 8, others 3). */
  steps?: number;
  threads?: number;
  quick?: boolean;
  log?: (line: string) => void;
}

const MiB = 1024 * 1024;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

interface GcEntry { start: number; end: number; kind: number }

/** GC entries observed for the whole run; attributed to segments by time afterwards. */
function observeGc(): { entries: GcEntry[]; ok: boolean; stop: () => void } {
  const entries: GcEntry[] = [];
  try {
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
        entries.push({ start: e.startTime, end: e.startTime + e.duration, kind: e.detail?.kind ?? 0 });
      }
    });
    obs.observe({ entryTypes: ['gc'] });
    return { entries, ok: true, stop: () => obs.disconnect() };
  } catch {
    return { entries, ok: false, stop: () => {} };
  }
}

// perf_hooks.constants.NODE_PERFORMANCE_GC_MAJOR
const GC_MAJOR = 4;

export async function runPoolBench(opts: PoolBenchOptions = {}): Promise<PoolBenchResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  const quick = opts.quick ?? false;
  const presets = opts.presets ?? (quick ? ['gpt-tiny'] : ['gpt-tiny', 'gpt-small']);
  const reps = Math.max(1, opts.reps ?? (quick ? 2 : 5));
  const threads = opts.threads ?? Math.max(1, availableParallelism());
  const notes: string[] = [];
  if (!nativeBasic()) notes.push('native kernels not built: timing the TypeScript reference kernels');
  setBlasThreads(threads);
  setKernelThreads(threads);

  const wasEnabled = pool.enabled;
  const prevHook = pool.onAllocate;
  let fresh = 0;
  const gc = observeGc();
  if (!gc.ok) notes.push("PerformanceObserver 'gc' entries unavailable: GC columns omitted");
  const rows: PoolBenchRow[] = [];
  const speedup: Record<string, number> = {};
  try {
    for (const preset of presets) {
      const cfg = presetConfig(preset);
      const { seqLen: T, vocabSize: V } = cfg.model;
      const B = cfg.train.microBatch;
      const steps = Math.max(1, opts.steps ?? (quick ? 3 : preset === 'gpt-tiny' ? 8 : 3));
      pool.enabled = true;
      pool.clear();
      const model = new GPT(cfg.model, { seed: cfg.train.seed });
      const optim = buildOptimizer(model, cfg);
      const params = model.numParameters();
      const rng = new Rng(11);
      const batches: { x: Tensor; y: Tensor }[] = [];
      for (let i = 0; i < 4; i++) {
        const xs = new Int32Array(B * T), ys = new Int32Array(B * T);
        for (let j = 0; j < xs.length; j++) { xs[j] = rng.int(V); ys[j] = rng.int(V); }
        batches.push({ x: fromStorage(xs, [B, T], 'int32').keep(), y: fromStorage(ys, [B, T], 'int32').keep() });
      }
      let stepNo = 0;
      const step = (): number => {
        const b = batches[stepNo++ % batches.length]!;
        const loss = scope(() => {
          const l = model.loss(b.x, b.y);
          backward(l);
          return l.item();
        });
        optim.step(cfg.optim.lr, cfg.optim.gradClip);
        return loss;
      };
      // Warm-up: JIT, OpenBLAS threads, AdamW state, the native backend's allocation hook.
      step();
      step();
      // Chained after the warm-up so that it wraps whatever hook the backend installed.
      const inner = pool.onAllocate;
      pool.onAllocate = (buf) => { fresh++; inner?.(buf); };

      log(`pool bench ${preset}: ${params.toLocaleString('en-US')} parameters, B ${B} × T ${T}, ${threads} thread(s), ${reps} rep(s) × (1 untimed + ${steps} timed) steps per mode`);
      const acc: Record<PoolMode, { ms: number[]; fresh: number; bytes: number; hits: number; misses: number; gcMs: number; gcN: number; gcMajor: number; rss: number[]; ab: number[]; n: number }> = {
        on: { ms: [], fresh: 0, bytes: 0, hits: 0, misses: 0, gcMs: 0, gcN: 0, gcMajor: 0, rss: [], ab: [], n: 0 },
        off: { ms: [], fresh: 0, bytes: 0, hits: 0, misses: 0, gcMs: 0, gcN: 0, gcMajor: 0, rss: [], ab: [], n: 0 },
      };
      const windows: { mode: PoolMode; start: number; end: number }[] = [];
      let lossSeen = 0;
      for (let r = 0; r < reps; r++) {
        const order: PoolMode[] = r % 2 === 0 ? ['on', 'off'] : ['off', 'on'];
        for (const mode of order) {
          pool.enabled = mode === 'on';
          pool.clear();
          lossSeen = step(); // untimed: refills the pool when on
          await tick();
          const a = acc[mode];
          const s0 = pool.stats(), f0 = fresh;
          const w0 = performance.now();
          for (let i = 0; i < steps; i++) {
            const t0 = performance.now();
            lossSeen = step();
            a.ms.push(performance.now() - t0);
            await tick();
          }
          const w1 = performance.now();
          windows.push({ mode, start: w0, end: w1 });
          const s1 = pool.stats();
          a.fresh += fresh - f0;
          a.bytes += s1.allocatedBytes - s0.allocatedBytes;
          a.hits += s1.hits - s0.hits;
          a.misses += s1.misses - s0.misses;
          a.n += steps;
          const mu = process.memoryUsage();
          a.rss.push(mu.rss / MiB);
          a.ab.push(mu.arrayBuffers / MiB);
        }
        log(`  rep ${r + 1}/${reps}: on ${median(acc.on.ms.slice(-steps)).toFixed(1)} ms/step, off ${median(acc.off.ms.slice(-steps)).toFixed(1)} ms/step (loss ${lossSeen.toFixed(3)})`);
      }
      pool.onAllocate = inner;
      await tick();
      await tick();
      // GC entries are delivered asynchronously; attribute them to segments by start time.
      for (const e of gc.entries) {
        const w = windows.find((x) => e.start >= x.start && e.start < x.end);
        if (!w) continue;
        const a = acc[w.mode];
        a.gcMs += e.end - e.start;
        a.gcN++;
        if (e.kind === GC_MAJOR) a.gcMajor++;
      }
      gc.entries.length = 0;
      for (const mode of ['on', 'off'] as const) {
        const a = acc[mode];
        rows.push({
          preset, params, B, T, threads, mode, steps: a.n,
          msPerStep: median(a.ms), msPerStepMin: Math.min(...a.ms), stepMs: a.ms.map((x) => +x.toFixed(3)),
          freshAllocsPerStep: a.fresh / a.n, freshBytesPerStep: a.bytes / a.n, hitsPerStep: a.hits / a.n, missesPerStep: a.misses / a.n,
          gcMsPerStep: gc.ok ? a.gcMs / a.n : null, gcPerStep: gc.ok ? a.gcN / a.n : null, majorGcPerStep: gc.ok ? a.gcMajor / a.n : null,
          rssMiB: median(a.rss), rssMaxMiB: Math.max(...a.rss), arrayBuffersMiB: median(a.ab),
        });
      }
      const on = rows[rows.length - 2]!, off = rows[rows.length - 1]!;
      speedup[preset] = off.msPerStep / on.msPerStep;
      const f = (x: number | null, d = 1) => (x === null ? '-' : x.toFixed(d));
      log(`  mode  ms/step(median)  ms/step(min)  fresh bufs/step  fresh MiB/step  misses/step  GC ms/step  GCs/step (major)  RSS MiB (max)  ArrayBuffers MiB`);
      for (const x of [on, off]) {
        log(`  ${x.mode.padEnd(4)}  ${f(x.msPerStep).padStart(15)}  ${f(x.msPerStepMin).padStart(12)}  ${f(x.freshAllocsPerStep).padStart(15)}  ${f(x.freshBytesPerStep / MiB).padStart(14)}  ${f(x.missesPerStep).padStart(11)}  ${f(x.gcMsPerStep, 2).padStart(10)}  ${(f(x.gcPerStep) + ' (' + f(x.majorGcPerStep) + ')').padStart(17)}  ${(f(x.rssMiB, 0) + ' (' + f(x.rssMaxMiB, 0) + ')').padStart(13)}  ${f(x.arrayBuffersMiB, 0).padStart(16)}`);
      }
      log(`  pool off / pool on time per step: ${speedup[preset]!.toFixed(3)}x`);
      for (const b of batches) { b.x.dispose(); b.y.dispose(); }
    }
  } finally {
    gc.stop();
    pool.onAllocate = prevHook;
    pool.enabled = wasEnabled;
  }
  for (const n of notes) log(`note: ${n}`);
  return { rows, speedup, peakRssMiB: process.resourceUsage().maxRSS / 1024, notes };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2);
  const arg = (name: string): string | undefined => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const num = (name: string): number | undefined => (arg(name) === undefined ? undefined : Number(arg(name)));
  const presets = arg('--presets')?.split(',').filter(Boolean);
  runPoolBench({ quick: argv.includes('--quick'), presets, reps: num('--reps'), steps: num('--steps'), threads: num('--threads') })
    .catch((e: unknown) => { console.error(e); process.exitCode = 1; });
}
