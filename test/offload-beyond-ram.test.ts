// Bigger than RAM: a model whose fp32 weights plus AdamW state exceed the memory the
// process may use trains under parallel.offload=disk, and without offload fails
// cleanly with a message naming the setting (no crash, no hang), at dp=1 and dp=2.
//
// The limit is `ulimit -v` (RLIMIT_AS), which works in an unprivileged CI container
// (cgroup memory limits need a writable cgroup). Node maps about 1 GiB of address
// space before training starts (V8's reservations, thread stacks, OpenBLAS buffers),
// so the limit is derived from a measured baseline instead of a fixed number:
//   baseline = peak virtual size (VmPeak) of an offloaded run of the 50k-parameter
//              test model, measured here in the same conditions;
//   limit    = baseline + 11·P bytes for the big model of P parameters.
// Per rank, fp32 weights + AdamW moments are 12·P bytes (> 11·P), and training without
// offload needs 16·P (weights, gradients, two moments). Under offload the process keeps
// weights and gradients (8·P) plus two chunk buffers (6 MiB) and small activations, which
// leaves ~3·P (~75 MB here) of slack for the baseline's variation.
// MALLOC_ARENA_MAX=2 stops glibc from reserving a 64 MiB malloc arena per thread,
// address space that ulimit -v would count although it is never touched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { gptParamCount } from '../src/nn/gpt-config.js';
import { presetConfig } from '../src/train/config.js';
import { tinyData, tinyArgs, stepLosses, tmp, CLI, type RunResult } from './helpers/train-fixture.js';

const PRELOAD = join(projectRoot(), 'test', 'helpers', 'report-vmpeak.cjs');

// 8 blocks of width 512 over the 384-token test vocabulary: P ≈ 25.6M parameters, so
// fp32 weights + AdamW state ≈ 307 MB; a few 16-token steps keep it quick.
const BIG = ['--model.nLayer=8', '--model.dModel=512', '--model.nHead=8', '--model.dFF=2048', '--model.seqLen=16', '--train.microBatch=1',
  '--train.steps=3', '--train.evalEvery=0', '--train.evalBatches=1', '--train.checkpointEvery=0', '--optim.warmupSteps=1'];

function bigParams(): number {
  const c = presetConfig('gpt-tiny').model;
  return gptParamCount({ ...c, vocabSize: 384, nLayer: 8, dModel: 512, nHead: 8, dFF: 2048, seqLen: 16 });
}

/** Runs `athanor <args>` under `ulimit -v limitKb` (0: no limit). */
function limited(limitKb: number, args: string[], timeoutMs = 240_000): Promise<RunResult> {
  return new Promise((resolve) => {
    const script = `${limitKb > 0 ? `ulimit -v ${limitKb} || exit 97; ` : ''}exec "${process.execPath}" "${CLI}" "$@"`;
    const child = spawn('bash', ['-c', script, 'bash', ...args], {
      env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_WATCHDOG_S: '60', MALLOC_ARENA_MAX: '2', NODE_OPTIONS: `--require ${PRELOAD}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => { out += c; });
    child.stderr.on('data', (c: Buffer) => { out += c; });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => { clearTimeout(t); resolve({ code, signal, out }); });
  });
}

/** A clean out-of-memory exit's advice: the pre-allocation refusal, or a failed allocation turned into the same advice. */
const CLEAN_OOM = /out of memory: (rank \d needs about .*RLIMIT_AS|Array buffer allocation failed while allocating training state).*--parallel\.offload=disk --parallel\.offloadDir=PATH/;

function vmPeaksKb(out: string): number[] {
  return [...out.matchAll(/athanor-test VmPeak (\d+) kB/g)].map((m) => Number(m[1]));
}

test('bigger than RAM: trains under parallel.offload=disk and fails cleanly without it (ulimit -v)', { skip: process.platform !== 'linux' && 'needs /proc and ulimit -v' }, async () => {
  const data = await tinyData();
  const probeOut = tmp('ram-probe');
  const probe = await limited(0, ['train', ...tinyArgs(data, probeOut), '--parallel.offload=disk', `--parallel.offloadDir=${join(probeOut, 'offload')}`]);
  assert.equal(probe.code, 0, `baseline run failed:\n${probe.out.slice(-2000)}`);
  const [baselineKb] = vmPeaksKb(probe.out);
  assert.ok(baselineKb, `the baseline run reported no VmPeak:\n${probe.out.slice(-1000)}`);
  rmSync(probeOut, { recursive: true, force: true });

  const P = bigParams();
  const limitKb = baselineKb + Math.floor((11 * P) / 1024);
  console.log(`P = ${P.toLocaleString('en-US')} parameters: fp32 weights + AdamW state ${(12 * P / 2 ** 20).toFixed(0)} MiB; ` +
    `baseline VmPeak ${(baselineKb / 1024).toFixed(0)} MiB; ulimit -v ${(limitKb / 1024).toFixed(0)} MiB (headroom ${(11 * P / 2 ** 20).toFixed(0)} MiB)`);

  // Without offload, at the same limit: a clean exit naming the setting. Either the
  // pre-allocation check refuses (memory-fit.ts), or, where the address space the runtime
  // maps after that check (threads, I/O buffers) leaves the check's margin too thin, the
  // allocation fails and becomes the same advice; both exit by themselves without a crash.
  const memOut = tmp('ram-mem');
  const mem = await limited(limitKb, ['train', ...tinyArgs(data, memOut), ...BIG]);
  assert.notEqual(mem.code, 0, `without offload the run should not fit:\n${mem.out.slice(-2000)}`);
  assert.equal(mem.signal, null, `without offload: killed instead of exiting cleanly:\n${mem.out.slice(-2000)}`);
  assert.match(mem.out, CLEAN_OOM, mem.out.slice(-2000));
  assert.doesNotMatch(mem.out, /FATAL ERROR|Segmentation fault|Aborted|core dumped/, mem.out.slice(-2000));
  // The pre-allocation check itself, where its margin is wide (8P of room against 16P needed).
  const preOut = tmp('ram-pre');
  const pre = await limited(baselineKb + Math.floor((8 * P) / 1024), ['train', ...tinyArgs(data, preOut), ...BIG]);
  assert.equal(pre.signal, null, pre.out.slice(-2000));
  assert.match(pre.out, /athanor: out of memory: rank 0 needs about .*RLIMIT_AS.*--parallel\.offload=disk --parallel\.offloadDir=PATH/, pre.out.slice(-2000));
  rmSync(preOut, { recursive: true, force: true });

  // Two ranks, each under its own limit of the same kind (a rank also runs a communication
  // thread, so its baseline is measured from an offloaded dp=2 run of the small model):
  // every rank refuses, and the launcher exits by itself.
  const probe2Out = tmp('ram-probe2');
  const probe2 = await limited(0, ['launch', '--nproc-per-node', '2', '--', 'train', ...tinyArgs(data, probe2Out), '--parallel.dp=2', '--train.microBatch=4',
    '--parallel.offload=disk', `--parallel.offloadDir=${join(probe2Out, 'offload')}`]);
  assert.equal(probe2.code, 0, `dp=2 baseline run failed:\n${probe2.out.slice(-2000)}`);
  const limit2Kb = Math.max(...vmPeaksKb(probe2.out)) + Math.floor((11 * P) / 1024);
  console.log(`dp=2: ulimit -v ${(limit2Kb / 1024).toFixed(0)} MiB per rank`);
  rmSync(probe2Out, { recursive: true, force: true });
  const mem2Out = tmp('ram-mem2');
  const mem2 = await limited(limit2Kb, ['launch', '--nproc-per-node', '2', '--', 'train', ...tinyArgs(data, mem2Out), ...BIG, '--parallel.dp=2']);
  assert.notEqual(mem2.code, 0, mem2.out.slice(-2000));
  assert.equal(mem2.signal, null, `dp=2 without offload: the launcher did not exit by itself:\n${mem2.out.slice(-2000)}`);
  assert.match(mem2.out, CLEAN_OOM, mem2.out.slice(-2000));
  assert.doesNotMatch(mem2.out, /athanor watchdog/, 'no rank waited for the watchdog');

  // With offload: the same model trains under the same limit.
  const offOut = tmp('ram-off');
  const offDir = join(offOut, 'offload');
  const off = await limited(limitKb, ['train', ...tinyArgs(data, offOut), ...BIG, '--parallel.offload=disk', `--parallel.offloadDir=${offDir}`]);
  assert.equal(off.code, 0, `offload run failed under the limit:\n${off.out.slice(-3000)}`);
  const losses = stepLosses(offOut);
  assert.equal(losses.size, 3, `expected 3 steps, got ${losses.size}`);
  for (const [s, l] of losses) assert.ok(Number.isFinite(l), `step ${s}: loss ${l}`);
  const [peakKb] = vmPeaksKb(off.out);
  console.log(`offload run: VmPeak ${(peakKb! / 1024).toFixed(0)} MiB of the ${(limitKb / 1024).toFixed(0)} MiB limit; losses ${[...losses.values()].map((l) => l.toFixed(4)).join(', ')}`);
  assert.ok(existsSync(join(offOut, 'checkpoints', 'latest')), 'the final checkpoint was written (moments streamed from the offload file)');
  assert.deepEqual(readdirSync(offDir), [], 'the offload file is deleted at exit');
  for (const d of [memOut, mem2Out, offOut]) rmSync(d, { recursive: true, force: true });
});
