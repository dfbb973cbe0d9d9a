// A child process of `athanor plan --calibrate` (calibrate-overhead.ts): steps of the real
// GPT (forward, backward, AdamW) at a probe shape on one BLAS/kernel thread, timed by the
// wall clock and by the main thread's CPU time, so that the parent can compare one such process alone with one per core at
// once. After its warm-up it prints READY and waits for GO on stdin (all probes of a
// co-running measurement start together), then prints ATHANOR_PROBE {json}.
import { GPT } from '../nn/gpt.js';
import { presetConfig } from '../train/config.js';
import { fromStorage } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { backward } from '../autograd/tape.js';
import { setBlasThreads } from '../backend/blas.js';
import { setKernelThreads } from '../backend/dispatch.js';
import { buildOptimizer } from '../train/optim-setup.js';
import { readFileSync } from 'node:fs';
import { PROBE } from './calibrate-overhead.js';


/** CPU seconds of the main thread (Linux schedstat, ns precision); null elsewhere. */
function mainCpu(): number | null {
  try { return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e9; } catch { return null; }
}

async function main(): Promise<void> {
  setBlasThreads(1);
  setKernelThreads(1);
  const steps = Number(process.argv[2] ?? 8);
  const cfg = presetConfig('gpt-tiny');
  const model = new GPT({ ...cfg.model, nLayer: PROBE.nLayer }, { seed: 3 });
  const opt = buildOptimizer(model, cfg);
  const B = PROBE.microBatch, T = cfg.model.seqLen, V = cfg.model.vocabSize;
  const x = fromStorage(new Int32Array(B * T).map((_, i) => (i * 7919) % V), [B, T], 'int32');
  const y = fromStorage(new Int32Array(B * T).map((_, i) => (i * 104729 + 1) % V), [B, T], 'int32');
  const step = (): void => {
    scope(() => backward(model.loss(x, y)));
    opt.step(1e-4, 1);
  };
  for (let i = 0; i < 3; i++) step();
  process.stdout.write('READY\n');
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  const wall: number[] = [], cpu: number[] = [];
  const c0 = process.cpuUsage(), m0 = mainCpu();
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now(), u0 = mainCpu();
    step();
    const u1 = mainCpu();
    wall.push((performance.now() - t0) / 1000);
    if (u0 !== null && u1 !== null) cpu.push(u1 - u0);
  }
  const c = process.cpuUsage(c0), m1 = mainCpu();
  // CPU seconds per step of the process's other threads (V8's GC and compiler workers).
  const all = (c.user + c.system) / 1e6;
  const helperPerStep = m0 !== null && m1 !== null && m1 > m0 ? Math.max(0, all - (m1 - m0)) / steps : null;
  process.stdout.write(`ATHANOR_PROBE ${JSON.stringify({ wall, cpu, helperPerStep })}\n`);
  process.stdin.destroy();
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
