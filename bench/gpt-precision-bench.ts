// gpt-small (or gpt-tiny, --preset) training tokens/s by precision: Athanor fp32, bf16 and
// fp16 (train.precision) against PyTorch 1.13 fp32 and under torch.autocast('cpu', bfloat16), all 2 threads,
// interleaved reps in one invocation, medians of per-step tokens/s after warm-up, peak
// RSS per run. The CPU's ISA (avx2 / avx512_bf16 / amx) and the load average before and
// after are recorded with the numbers.
//
// On a CPU without AVX512_BF16/AMX, PyTorch's bf16 matmul is a scalar fallback (~0.5
// GFLOP/s measured on Zen 3): a gpt-small autocast step would take minutes, so there the
// autocast peer runs a reduced batch (B1 × T64, one step) and is labelled as such.
// gpt-tiny runs its preset batch (B16 × T128, V 2048) on the same kind of synthetic data.
// Run: node dist/bench/gpt-precision-bench.js [--quick] [--preset gpt-small|gpt-tiny] [--reps N] [--json out.json]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { projectRoot } from '../src/backend/native.js';
import { dnnlStatus } from '../src/backend/dnnl.js';
import { athanor, median, syntheticData } from './gpt-train-bench.js';
import { cpuIsa } from './gemm-precision-bench.js';
import { PYTHON } from './machine-info.js';

interface TorchRun { tps: number; rssMB: number; note: string }

interface Model { preset: 'gpt-small' | 'gpt-tiny'; batch: number; seq: number; vocab: number }
const MODELS: Record<Model['preset'], Model> = {
  'gpt-small': { preset: 'gpt-small', batch: 8, seq: 256, vocab: 8192 },
  'gpt-tiny': { preset: 'gpt-tiny', batch: 16, seq: 128, vocab: 2048 },
};

function torchRun(model: Model, threads: number, steps: number, warmup: number, autocast: boolean, hasBf16: boolean): TorchRun | null {
  const small = autocast && !hasBf16;
  const args = [join(projectRoot(), 'bench', 'peers', 'torch-gpt.py'), '--model', model.preset, '--threads', String(threads), '--grad-clip', '1.0',
    '--steps', String(small ? 1 : steps - warmup), '--warmup-steps', String(small ? 0 : warmup), '--autocast', autocast ? 'bf16' : 'off',
    ...(small ? ['--batch', '1', '--seq', '64'] : ['--batch', String(model.batch), '--seq', String(model.seq)])];
  const r = spawnSync(PYTHON, args, { encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) return null;
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (!line) return null;
  const j = JSON.parse(line) as { tokens_per_s: number; peak_rss_mb: number };
  return { tps: j.tokens_per_s, rssMB: j.peak_rss_mb, note: small ? 'B1 x T64, 1 step (no bf16 hardware: scalar bf16 matmul)' : `B${model.batch} x T${model.seq}` };
}

export async function runGptPrecisionBench(o: { quick?: boolean; reps?: number; preset?: string; log?: (s: string) => void } = {}) {
  const log = o.log ?? console.log;
  const preset = o.preset ?? 'gpt-small';
  if (!(preset in MODELS)) throw new Error(`gpt-precision-bench: --preset expects ${Object.keys(MODELS).join(' or ')}, got '${preset}'`);
  const model = MODELS[preset as Model['preset']];
  const tiny = model.preset === 'gpt-tiny';
  // gpt-tiny steps are ~15x cheaper: more of them per run for a steadier median.
  const reps = o.reps ?? (o.quick ? 2 : 3), steps = (o.quick ? 4 : 8) * (tiny ? 3 : 1), warmup = 2, threads = 2;
  const isa = cpuIsa(), dn = dnnlStatus();
  const hasBf16 = isa.flags.includes('avx512_bf16') || isa.flags.includes('amx_bf16');
  const loadBefore = loadavg();
  log(`gpt-precision: ${isa.model}; ISA ${isa.flags.join(' ')}; oneDNN ${dn.available ? `${dn.version} (${dn.isa})` : 'unavailable'}; load ${loadBefore.map((x) => x.toFixed(2)).join(' ')}`);
  const data = mkdtempSync(join(tmpdir(), 'athanor-precdata-'));
  syntheticData(data, model.vocab);
  const runs: Record<string, { tps: number[]; rss: number[]; note: string }> = {};
  const add = (k: string, tps: number, rss: number | undefined, note = `B${model.batch} x T${model.seq}`) => {
    const e = (runs[k] ??= { tps: [], rss: [], note });
    e.tps.push(tps);
    if (rss !== undefined) e.rss.push(rss);
  };
  const athanorCases: [string, string[]][] = [['athanor fp32', []], ['athanor bf16', ['--train.precision=bf16']], ...(o.quick ? [] : [['athanor fp16', ['--train.precision=fp16']]] as [string, string[]][])];
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const [name, extra] of athanorCases) {
        const r = athanor(data, 1, threads, steps, warmup, [`--train.microBatch=${model.batch}`, ...extra], model.preset);
        add(name, r.tps, r.maxRssMB);
        log(`  rep ${rep + 1}: ${name}: ${r.tps.toFixed(0)} tokens/s`);
      }
      for (const [name, ac] of [['pytorch fp32', false], ['pytorch autocast bf16', true]] as const) {
        if (ac && !hasBf16 && rep > 0) continue; // the reduced-batch autocast run is informative once
        const t = torchRun(model, threads, steps, warmup, ac, hasBf16);
        if (t) { add(name, t.tps, t.rssMB, t.note); log(`  rep ${rep + 1}: ${name}: ${t.tps.toFixed(0)} tokens/s (${t.note})`); }
        else if (rep === 0) log(`  ${name}: PyTorch peer unavailable`);
      }
    }
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
  const loadAfter = loadavg();
  const rows = Object.entries(runs).map(([config, v]) => ({ config, tokensPerSec: median(v.tps), perRun: v.tps, peakRssMB: v.rss.length ? Math.max(...v.rss) : null, note: v.note }));
  const fp32 = rows.find((r) => r.config === 'athanor fp32'), ac = rows.find((r) => r.config === 'pytorch autocast bf16');
  log(`\n${model.preset} training, 2 threads, median tokens/s over interleaved reps (ISA ${isa.flags.join(' ')}; load before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}):`);
  for (const r of rows) {
    log(`  ${r.config.padEnd(24)} ${r.tokensPerSec.toFixed(0).padStart(6)} tokens/s  peak RSS ${r.peakRssMB?.toFixed(0) ?? '?'} MB  [${r.note}]` +
      `${fp32 && r.config.startsWith('athanor') && r !== fp32 ? `  vs Athanor fp32 ${(r.tokensPerSec / fp32.tokensPerSec).toFixed(2)}x` : ''}` +
      `${ac && r.config === 'athanor bf16' ? `  vs PyTorch autocast ${(r.tokensPerSec / ac.tokensPerSec).toFixed(2)}x${ac.note !== r.note ? ' (different batch: see note)' : ''}` : ''}`);
  }
  return { preset: model.preset, machine: { cpu: isa.model, isaFlags: isa.flags, onednn: dn, threads }, loadBefore, loadAfter, reps, rows };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const opt = (k: string) => { const i = args.indexOf(k); return i >= 0 ? args[i + 1] : undefined; };
  const res = await runGptPrecisionBench({ quick: args.includes('--quick'), reps: opt('--reps') ? Number(opt('--reps')) : undefined, preset: opt('--preset') });
  const out = opt('--json');
  if (out) writeFileSync(out, JSON.stringify(res, null, 2));
}
