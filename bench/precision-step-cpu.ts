// CPU seconds per training step by precision, for a loaded machine: one thread, fp32 and
// bf16 steps alternating in one process (two models, same seed and batch), each step's
// process CPU time (user + system) rather than its wall time, which on a shared machine
// measures the other jobs. Optionally the same in a child using another build of the
// native library (--native-lib A,B: e.g. before/after a kernel change), children
// interleaved, medians over reps. The CPU's ISA and the load average are printed.
//
//   node dist/bench/precision-step-cpu.js [--preset gpt-tiny] [--steps 6] [--reps 2] [--native-lib PATH[,PATH]]
import { spawnSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { machineInfo } from './machine-info.js';
import { projectRoot } from '../src/backend/native.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
}

interface ChildOut { fp32: number[]; bf16: number[]; fp32Wall: number[]; bf16Wall: number[] }

async function child(preset: string, steps: number): Promise<void> {
  const { GPT } = await import('../src/nn/gpt.js');
  const { presetConfig } = await import('../src/train/config.js');
  const { scope } = await import('../src/core/scope.js');
  const { backward } = await import('../src/autograd/tape.js');
  const { fromStorage } = await import('../src/core/tensor.js');
  const { setPrecision } = await import('../src/backend/precision.js');
  const { markWeightsUpdated } = await import('../src/backend/lowp-tensor.js');
  const { AdamW } = await import('../src/optim/index.js');
  const { setKernelThreads } = await import('../src/backend/dispatch.js');
  const { setBlasThreads } = await import('../src/backend/blas.js');
  setKernelThreads(1);
  setBlasThreads(1);
  const cfg = presetConfig(preset);
  const B = cfg.train.microBatch, T = cfg.model.seqLen, V = cfg.model.vocabSize;
  const idx = fromStorage(new Int32Array(B * T).map((_, i) => (i * 7919) % V), [B, T], 'int32');
  const tg = fromStorage(new Int32Array(B * T).map((_, i) => (i * 104729 + 3) % V), [B, T], 'int32');
  const runs = (['fp32', 'bf16'] as const).map((p) => {
    const model = new GPT(cfg.model, { seed: 1 });
    return { p, model, opt: new AdamW(model.parameters(), { lr: 1e-4 }) };
  });
  const out: ChildOut = { fp32: [], bf16: [], fp32Wall: [], bf16Wall: [] };
  for (let s = 0; s < steps + 1; s++) {
    for (const r of runs) {
      setPrecision(r.p);
      const c0 = process.cpuUsage(), t0 = performance.now();
      scope(() => {
        const l = r.model.loss(idx, tg);
        backward(l);
      });
      r.opt.step();
      r.opt.zeroGrad();
      markWeightsUpdated();
      const c = process.cpuUsage(c0), wall = (performance.now() - t0) / 1000;
      if (s === 0) continue; // warm-up: first-use allocations, primitive and weight-copy creation
      out[r.p].push((c.user + c.system) / 1e6);
      out[`${r.p}Wall`].push(wall);
    }
  }
  process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

async function main(): Promise<void> {
  const preset = arg('--preset', 'gpt-tiny'), steps = Number(arg('--steps', '6')), reps = Number(arg('--reps', '2'));
  const libs = arg('--native-lib', '').split(',').filter((x) => x);
  const m = await machineInfo(projectRoot());
  const before = loadavg();
  console.log(`machine: ${m.cpuModel}, ISA ${m.isa.join(' ')}; 1 thread; load average before ${before.map((x) => x.toFixed(2)).join(' ')}`);
  const self = fileURLToPath(import.meta.url);
  const variants = libs.length ? libs : [''];
  const acc = new Map<string, ChildOut>();
  for (let r = 0; r < reps; r++) {
    for (const lib of variants) {
      const env = { ...process.env, ATHANOR_QUIET: '1', ...(lib ? { ATHANOR_NATIVE_LIB: lib } : {}) };
      const c = spawnSync(process.execPath, [self, '--child', preset, '--steps', String(steps)], { encoding: 'utf8', env });
      const line = c.stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (!line) throw new Error(`child (${lib || 'default library'}) failed:\n${c.stdout}\n${c.stderr}`);
      const o = JSON.parse(line.slice(7)) as ChildOut;
      const a = acc.get(lib) ?? { fp32: [], bf16: [], fp32Wall: [], bf16Wall: [] };
      for (const k of ['fp32', 'bf16', 'fp32Wall', 'bf16Wall'] as const) a[k].push(...o[k]);
      acc.set(lib, a);
      console.log(`  rep ${r + 1} ${lib || 'build/libathanor.so'}: CPU s/step fp32 ${median(o.fp32).toFixed(3)}, bf16 ${median(o.bf16).toFixed(3)}`);
    }
  }
  console.log(`\n${preset}, CPU seconds per step (1 thread, median of ${reps} x ${steps} steps each; wall in brackets):`);
  for (const [lib, a] of acc) {
    console.log(`  ${(lib || 'build/libathanor.so').padEnd(40)} fp32 ${median(a.fp32).toFixed(3)} [${median(a.fp32Wall).toFixed(3)}]  bf16 ${median(a.bf16).toFixed(3)} [${median(a.bf16Wall).toFixed(3)}]  bf16/fp32 ${(median(a.bf16) / median(a.fp32)).toFixed(3)}`);
  }
  console.log(`load average after ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
}

if (process.argv.includes('--child')) {
  child(arg('--child', 'gpt-tiny'), Number(arg('--steps', '6'))).catch((e: unknown) => { console.error(e); process.exit(1); });
} else {
  main().catch((e: unknown) => { console.error(e); process.exit(1); });
}
