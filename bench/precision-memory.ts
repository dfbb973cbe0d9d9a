// Activation memory and peak RSS per precision (issue 10): gpt-small (B8 × T256), a few
// AdamW steps in a fresh process per precision (peak RSS is per process), interleaved
// fp32 / bf16 / fp32 / bf16 ... Reports the activation bytes the graph holds for backward
// at the end of the forward (autograd/saved-pack.ts activationBytes), the tensor pool's
// allocated bytes, and the process's peak RSS.
//
//   node dist/bench/precision-memory.js [--quick] [--preset gpt-small] [--reps N] [--steps N] [--unbounded-scratch]
//
// --unbounded-scratch adds a bf16 run whose widened-GEMM scratch is not split into panels
// (how gemm-lowp.ts worked before the 8 MiB panel budget), to show what the budget saves
// on CPUs without native bf16 GEMMs. OMP_NUM_THREADS / ATHANOR_NUM_THREADS set the children's threads.
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { machineInfo } from './machine-info.js';
import { projectRoot } from '../src/backend/native.js';

interface ChildResult { precision: string; activationBytes: number; maxRssMiB: number; poolAllocatedMiB: number; loss: number; seconds: number }

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
}

async function child(precision: string, preset: string, steps: number, unbounded: boolean): Promise<void> {
  const { GPT } = await import('../src/nn/gpt.js');
  const { presetConfig } = await import('../src/train/config.js');
  const { scope } = await import('../src/core/scope.js');
  const { backward } = await import('../src/autograd/tape.js');
  const { fromStorage } = await import('../src/core/tensor.js');
  const { setPrecision } = await import('../src/backend/precision.js');
  const { markWeightsUpdated } = await import('../src/backend/lowp-tensor.js');
  const { activationBytes } = await import('../src/autograd/saved-pack.js');
  const { AdamW } = await import('../src/optim/index.js');
  const { pool } = await import('../src/core/buffer-pool.js');
  const { setWidenPanelElements } = await import('../src/backend/gemm-lowp.js');
  if (unbounded) setWidenPanelElements(Number.MAX_SAFE_INTEGER);
  const cfg = presetConfig(preset);
  setPrecision(precision as 'fp32' | 'bf16');
  const model = new GPT(cfg.model, { seed: 1 });
  const opt = new AdamW(model.parameters(), { lr: 1e-4 });
  const B = cfg.train.microBatch, T = cfg.model.seqLen, V = cfg.model.vocabSize;
  const idx = fromStorage(new Int32Array(B * T).map((_, i) => (i * 7919) % V), [B, T], 'int32');
  const tg = fromStorage(new Int32Array(B * T).map((_, i) => (i * 104729 + 3) % V), [B, T], 'int32');
  let act = 0, loss = 0;
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    scope(() => {
      const l = model.loss(idx, tg);
      act = activationBytes(l);
      backward(l);
      loss = l.item();
    });
    opt.step();
    opt.zeroGrad();
    markWeightsUpdated();
  }
  const r: ChildResult = {
    precision, activationBytes: act, maxRssMiB: process.resourceUsage().maxRSS / 1024, poolAllocatedMiB: pool.stats().allocatedBytes / 2 ** 20,
    loss, seconds: (performance.now() - t0) / 1000,
  };
  process.stdout.write(`RESULT ${JSON.stringify(r)}\n`);
}

async function main(): Promise<void> {
  const preset = arg('--preset', 'gpt-small');
  const quick = process.argv.includes('--quick');
  const reps = Number(arg('--reps', quick ? '1' : '2')), steps = Number(arg('--steps', quick ? '2' : '3'));
  const m = await machineInfo(projectRoot());
  console.log(`machine: ${m.cpuModel}, ISA ${m.isa.join(' ')}; load average before ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const self = fileURLToPath(import.meta.url);
  const results: ChildResult[] = [];
  for (let r = 0; r < reps; r++) {
    for (const v of ['fp32', 'bf16', ...(process.argv.includes('--unbounded-scratch') ? ['bf16-unbounded-scratch'] : [])]) {
      const p = v.startsWith('bf16') ? 'bf16' : 'fp32';
      const c = spawnSync(process.execPath, [self, '--child', p, '--preset', preset, '--steps', String(steps), ...(v === p ? [] : ['--unbounded'])], { encoding: 'utf8', env: { ...process.env, ATHANOR_QUIET: '1' } });
      const line = c.stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (!line) throw new Error(`child ${p} failed:\n${c.stdout}\n${c.stderr}`);
      const res = { ...(JSON.parse(line.slice(7)) as ChildResult), precision: v };
      results.push(res);
      console.log(`  ${v}: activations held for backward ${(res.activationBytes / 2 ** 20).toFixed(1)} MiB, peak RSS ${res.maxRssMiB.toFixed(0)} MiB, pool allocated ${res.poolAllocatedMiB.toFixed(0)} MiB, loss ${res.loss.toFixed(4)}, ${steps} steps in ${res.seconds.toFixed(1)} s`);
    }
  }
  const med = (p: string, k: keyof ChildResult) => {
    const v = results.filter((x) => x.precision === p).map((x) => x[k] as number).sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)]!;
  };
  const aF = med('fp32', 'activationBytes'), aB = med('bf16', 'activationBytes');
  console.log(`\n${preset}: activations fp32 ${(aF / 2 ** 20).toFixed(1)} MiB, bf16 ${(aB / 2 ** 20).toFixed(1)} MiB (${(aB / aF).toFixed(3)}×); ` +
    `peak RSS fp32 ${med('fp32', 'maxRssMiB').toFixed(0)} MiB, bf16 ${med('bf16', 'maxRssMiB').toFixed(0)} MiB` +
    `${results.some((x) => x.precision === 'bf16-unbounded-scratch') ? `, bf16 with unbounded widening scratch ${med('bf16-unbounded-scratch', 'maxRssMiB').toFixed(0)} MiB` : ''} (medians of ${reps})`);
  console.log(`load average after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

if (process.argv.includes('--child')) {
  child(arg('--child', 'fp32'), arg('--preset', 'gpt-small'), Number(arg('--steps', '3')), process.argv.includes('--unbounded')).catch((e: unknown) => { console.error(e); process.exit(1); });
} else {
  main().catch((e: unknown) => { console.error(e); process.exit(1); });
}
