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
import { readdirSync, readFileSync } from 'node:fs';

/** Thread ids that exist before the runtime starts: Node's own (V8 platform workers: GC and compilation helpers; libuv pool). */
let startupTids: Set<string> | null = null;
/** Threads started since, numbered in the order first seen ('comm1', 'comm2', …: one communication thread per parallel dimension, plus their helpers). */
const commNames = new Map<string, string>();
const commName = (tid: string): string => {
  let n = commNames.get(tid);
  if (!n) commNames.set(tid, (n = `comm${commNames.size + 1}`));
  return n;
};
function tids(): string[] {
  try { return readdirSync('/proc/self/task'); } catch { return []; }
}

/**
 * CPU seconds of each thread of this process (Linux /proc; {} elsewhere): the main thread is
 * 'main'; threads that existed before the runtime started are 'node-helpers' (V8's GC and
 * compiler workers and libuv's pool, all named "node" by the kernel, so a name alone would
 * lump them with the communication threads); the threads started since are 'comm1', 'comm2', … (the
 * communication threads). Tells where a rank's CPU time goes.
 */
function threadCpu(): Record<string, number> {
  const out: Record<string, number> = {};
  const tasks = tids();
  for (const t of tasks) {
    try {
      const st = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const name = Number(t) === process.pid ? 'main' : startupTids?.has(t) ? 'node-helpers' : startupTids ? commName(t) : st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      out[name] = (out[name] ?? 0) + (Number(f[11]) + Number(f[12])) / 100; // utime + stime, clock ticks
    } catch { /* thread exited */ }
  }
  return out;
}

/**
 * The main thread's [CPU, runqueue wait] seconds so far (Linux schedstat; null elsewhere).
 * Wall time minus both is the time it slept: waiting for communication or for another rank,
 * the part of a step that a loaded machine does not explain (runqueue wait is the load's).
 */
function mainSched(): [number, number] | null {
  try {
    const f = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').trim().split(' ');
    return [Number(f[0]) / 1e9, Number(f[1]) / 1e9];
  } catch { return null; }
}

/**
 * The main thread's CPU migrations and involuntary context switches so far (Linux
 * /proc/<pid>/task/<pid>/sched; null elsewhere), with the process's minor page faults and
 * the machine's steal time (a virtual machine's vCPU waiting for its host): the suspects
 * of a step time that moves between runs of the same case.
 */
function noiseCounters(): { migrations: number; involuntary: number; minorFaults: number; stealS: number } | null {
  try {
    const sched = readFileSync(`/proc/self/task/${process.pid}/sched`, 'utf8');
    const field = (k: string): number => Number(new RegExp(`^${k.replace('.', '\\.')}\\s*:\\s*(\\d+)`, 'm').exec(sched)?.[1] ?? NaN);
    const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
    return { migrations: field('se.nr_migrations'), involuntary: field('nr_involuntary_switches'), minorFaults: process.resourceUsage().minorPageFault, stealS: Number(cpu[8] ?? 0) / 100 };
  } catch { return null; }
}

/** CPU seconds of the main thread (Linux schedstat, ns; null elsewhere). */
function mainCpu(): number | null {
  try { return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9; } catch { return null; }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/**
 * Waits (asleep) until V8's helper threads stop working after the forced step-boundary GC:
 * a full collection leaves concurrent sweeping behind on the helpers, which otherwise ran
 * into the next step (measured here: 0.017 CPU-s per gpt-tiny step, 0.044 with the forced
 * GC against 0.026 without), costing the step a core that a 2-rank run does not have spare.
 * Done when the helpers' CPU grew by under 0.1 ms over a 2 ms wait (at most 100 ms).
 */
const helpersCpu = (): number | null => { const m = mainCpu(); if (m === null) return null; const u = process.cpuUsage(); return (u.user + u.system) / 1e6 - m; };
function settleGc(): void {
  let prev = helpersCpu();
  if (prev === null) return;
  for (let i = 0; i < 50; i++) {
    Atomics.wait(sleeper, 0, 0, 2);
    const now = helpersCpu()!;
    if (now - prev < 1e-4) return;
    prev = now;
  }
}

/** Steps not measured for CPU time (see cpuSteps); bench/plan-validate-bench.ts skips as many for the wall time. */
const WARMUP_STEPS = 2;

async function main(): Promise<void> {
  const { flags } = parseArgs(process.argv.slice(2));
  const cfg = configFromArgs(flags);
  const base = process.memoryUsage().arrayBuffers;
  let peak = base, live = 0, livePeak = 0, training = true;
  // CPU seconds of each step (all threads of this rank: main and communication thread),
  // from one onStep to the next; the first two steps (warm-up: first allocations, and the
  // buffer pool keeps a size only once it recurs, so the second step allocates again) are skipped.
  let lastCpu: NodeJS.CpuUsage | null = null;
  let gcCpu = 0;
  // Helper threads' CPU inside the forced-GC windows of the measured steps (left out of the steps' CPU with the rest of gcCpu).
  let helpersInProbes = 0; // CPU of the step-boundary GC and of the memory probe, not the step's
  // Their wall time too: the trainer's step time includes onStep (the forced GC, 20-90 ms
  // on gpt-tiny depending on load, a fifth of a step) and the probes it triggers; the bench
  // takes them off each step's wall time, as it takes their CPU off the step's CPU.
  let probeWall = 0;
  const probeSteps: number[] = [];
  const cpuSteps: number[] = [];
  let threads0: Record<string, number> | null = null, threads1: Record<string, number> = {};
  // Per measured step: the main thread's seconds asleep and waiting for a core (see mainSched).
  const sleptSteps: number[] = [], runqSteps: number[] = [];
  let sched0: [number, number] | null = null, wall0 = 0;
  let noise0: ReturnType<typeof noiseCounters> = null, noise1: ReturnType<typeof noiseCounters> = null;
  // Sampled during training steps only: the final checkpoint's serialisation buffers are not the step's memory.
  // poolAtPeak: bytes the buffer pool held (handed out + idle) when the peak was seen (the
  // rest of the peak is memory outside the pool: transport buffers, unpooled arrays awaiting GC).
  let poolAtPeak = 0;
  // After each step: [array-buffer bytes above the start, pool bytes allocated] (where memory goes).
  const stepMem: [number, number][] = [];
  // The probe's own CPU (process.memoryUsage() walks the heap's spaces; it runs at every fresh
  // allocation, dozens per step where sizes follow the routing) is left out of the step's CPU, as the GC is.
  const sample = (): void => {
    if (!training) return;
    const w0 = performance.now();
    const c0 = process.cpuUsage();
    const ab = process.memoryUsage().arrayBuffers;
    if (ab > peak) { peak = ab; poolAtPeak = live + pool.stats().pooledBytes; }
    const d = process.cpuUsage(c0);
    gcCpu += (d.user + d.system) / 1e6;
    probeWall += performance.now() - w0;
  };
  const prevOnAlloc = pool.onAllocate;
  pool.onAllocate = (buf) => { prevOnAlloc?.(buf); sample(); };
  const acq = pool.acquire.bind(pool), rel = pool.release.bind(pool);
  pool.acquire = (d, n) => { const b = acq(d, n); live += b.byteLength; if (training && live > livePeak) livePeak = live; return b; };
  pool.release = (d, b) => { live -= b.byteLength; rel(d, b); };
  startupTids = new Set(tids());
  const sync = await distributedLayerFromEnv(cfg);
  const rank = sync?.rank ?? 0;
  try {
    await train(cfg, {
      parallel: sync ?? undefined,
      onStep: (m) => {
        sample();
        // Under --expose-gc (the bench passes it) unreachable unpooled arrays are collected at
        // every step boundary, outside the step's CPU time: the peak then counts what a step
        // holds and allocates, not garbage from earlier steps that V8 had not yet collected.
        const g = (globalThis as { gc?: () => void }).gc;
        if (g) { const w0 = performance.now(), c0 = process.cpuUsage(), h0 = helpersCpu(); g(); settleGc(); const d = process.cpuUsage(c0), h1 = helpersCpu(); gcCpu += (d.user + d.system) / 1e6; probeWall += performance.now() - w0; if (h0 !== null && h1 !== null && lastCpu) helpersInProbes += h1 - h0; }
        const w1 = performance.now();
        stepMem.push([process.memoryUsage().arrayBuffers - base, pool.stats().allocatedBytes]);
        probeWall += performance.now() - w1;
        const now = process.cpuUsage();
        if (lastCpu) { cpuSteps.push((now.user - lastCpu.user + now.system - lastCpu.system) / 1e6 - gcCpu); probeSteps.push(probeWall / 1000); }
        if (m.step >= WARMUP_STEPS) lastCpu = now;
        const sc = mainSched(), w = performance.now() / 1000;
        if (sched0 && sc) { runqSteps.push(sc[1] - sched0[1]); sleptSteps.push(w - wall0 - (sc[0] - sched0[0]) - (sc[1] - sched0[1])); }
        if (m.step >= WARMUP_STEPS) { sched0 = sc; wall0 = w; }
        gcCpu = 0; probeWall = 0;
        if (m.step >= WARMUP_STEPS) { if (!threads0) threads0 = threadCpu(); else if (training) threads1 = threadCpu(); }
        if (m.step >= WARMUP_STEPS) { if (!noise0) noise0 = noiseCounters(); else if (training) noise1 = noiseCounters(); }
        if (m.step >= cfg.train.steps) training = false;
      },
    });
  } finally {
    await sync?.close();
  }
  // CPU seconds per measured step of each thread (the same steps as cpuSteps).
  const threadCpuPerStep: Record<string, number> = {};
  if (threads0 && cpuSteps.length) for (const [k, v] of Object.entries(threads1)) threadCpuPerStep[k] = (v - (threads0[k] ?? 0)) / cpuSteps.length;
  if (threadCpuPerStep['node-helpers'] !== undefined) threadCpuPerStep['node-helpers in forced GC'] = helpersInProbes / cpuSteps.length;
  // Per measured step: the noise suspects (see noiseCounters; steal is the whole machine's, all vCPUs).
  const noisePerStep: Record<string, number> = {};
  const n0 = noise0 as Record<string, number> | null, n1 = noise1 as Record<string, number> | null;
  if (n0 && n1 && cpuSteps.length) for (const k of Object.keys(n0)) noisePerStep[k] = (n1[k]! - n0[k]!) / cpuSteps.length;
  console.log(`ATHANOR_PLAN_MEASURED ${JSON.stringify({ rank, arrayBufferPeak: peak - base, poolAtPeak, poolLivePeak: livePeak, stepMem, cpuSteps, threadCpuPerStep, sleptSteps, runqSteps, probeSteps, noisePerStep })}`);
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
