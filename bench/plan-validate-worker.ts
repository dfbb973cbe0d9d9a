// One measured run for bench/plan-validate-bench.ts: the real trainer (`athanor train`'s
// config parsing and gradient sync), with the process's array-buffer memory (weights,
// gradients, optimizer state, activations, pooled buffers, communication buffers: all
// tensor memory in Athanor is ArrayBuffers) sampled at every fresh allocation and
// after every step. Prints one JSON line per rank.
import { pool } from '../src/core/buffer-pool.js';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { parseArgs } from '../src/train/overrides.js';
import { train } from '../src/train/trainer.js';
import { distributedLayerFromEnv } from '../src/train/dist-setup.js';

async function main(): Promise<void> {
  const { flags } = parseArgs(process.argv.slice(2));
  const cfg = configFromArgs(flags);
  const base = process.memoryUsage().arrayBuffers;
  let peak = base, live = 0, livePeak = 0, training = true;
  // CPU seconds of each step (all threads of this rank: main and communication thread),
  // from one onStep to the next; the first step (warm-up, first allocations) is skipped.
  let lastCpu: NodeJS.CpuUsage | null = null;
  const cpuSteps: number[] = [];
  // Sampled during training steps only: the final checkpoint's serialisation buffers are not the step's memory.
  const sample = (): void => { if (!training) return; const ab = process.memoryUsage().arrayBuffers; if (ab > peak) peak = ab; };
  const prevOnAlloc = pool.onAllocate;
  pool.onAllocate = (buf) => { prevOnAlloc?.(buf); sample(); };
  const acq = pool.acquire.bind(pool), rel = pool.release.bind(pool);
  pool.acquire = (d, n) => { const b = acq(d, n); live += b.byteLength; if (training && live > livePeak) livePeak = live; return b; };
  pool.release = (d, b) => { live -= b.byteLength; rel(d, b); };
  const sync = await distributedLayerFromEnv(cfg);
  const rank = sync?.rank ?? 0;
  try {
    await train(cfg, {
      parallel: sync ?? undefined,
      onStep: (m) => {
        sample();
        const now = process.cpuUsage();
        if (lastCpu) cpuSteps.push((now.user - lastCpu.user + now.system - lastCpu.system) / 1e6);
        lastCpu = now;
        if (m.step >= cfg.train.steps) training = false;
      },
    });
  } finally {
    await sync?.close();
  }
  console.log(`ATHANOR_PLAN_MEASURED ${JSON.stringify({ rank, arrayBufferPeak: peak - base, poolLivePeak: livePeak, cpuSteps })}`);
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
