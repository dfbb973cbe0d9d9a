// Pipeline parallelism through `athanor launch`: real rank processes on loopback. Every
// step's loss and the final parameters must equal single-process training with the same
// micro-batches (train.gradAccum) within TOL relative: the stages run the same GEMMs on
// the same rows, so only the float32 sums of the gradient norm over ranks (and, with dp,
// the loss average) round differently.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { TcpStoreServer } from '../src/runtime/tcp-store.js';
import { cpSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tinyData, tinyArgs, runCli, stepLosses, tmp, CLI } from './helpers/train-fixture.js';
import { closeCheckpointParams } from './helpers/checkpoint-params.js';

const TOL = 1e-5;
/** Parameters after data-parallel training vs one process (see the pp × dp case). */
const DP_TOL = 1e-4;
/** The same with tensor and data parallelism together (both round differently from one process; measured up to 1.4e-4). */
const TPDP_TOL = 3e-4;

interface Layout { pp?: number; dp?: number; tp?: number; schedule?: string; chunks?: number; zero?: number; tied?: boolean }

/** 4 layers, 4 micro-batches of 2 rows per step (global batch 8 rows). */
function args(data: string, out: string, l: Layout, extra: string[] = []): string[] {
  const dp = l.dp ?? 1;
  return [...tinyArgs(data, out), '--model.nLayer=4', `--train.microBatch=${2 / dp}`, '--train.gradAccum=4',
    `--parallel.pp=${l.pp ?? 1}`, `--parallel.dp=${dp}`, `--parallel.tp=${l.tp ?? 1}`, `--parallel.zero=${l.zero ?? 0}`,
    `--parallel.pipelineSchedule=${l.schedule ?? '1f1b'}`, `--parallel.pipelineChunks=${l.chunks ?? 2}`,
    `--model.tieEmbeddings=${l.tied ? 'true' : 'false'}`, ...extra];
}

async function run(label: string, l: Layout, extra: string[] = [], out = tmp(label)): Promise<{ out: string; losses: Map<number, number>; log: string }> {
  const data = await tinyData();
  const world = (l.pp ?? 1) * (l.dp ?? 1) * (l.tp ?? 1);
  const a = args(data, out, l, extra);
  const r = world === 1 ? await runCli(['train', ...a]) : await runCli(['launch', '--nproc-per-node', String(world), '--', 'train', ...a], { timeoutMs: 240_000 });
  assert.equal(r.code, 0, `${label} failed:\n${r.out.slice(-3000)}`);
  return { out, losses: stepLosses(out), log: r.out };
}

function closeLosses(a: Map<number, number>, b: Map<number, number>, what: string): void {
  assert.ok(a.size > 0 && a.size === b.size, `${what}: ${a.size} vs ${b.size} steps`);
  for (const [s, l] of a) {
    const o = b.get(s)!;
    assert.ok(Math.abs(l - o) <= TOL * Math.abs(o), `${what}: step ${s} loss ${l} vs ${o}`);
  }
}

/**
 * Final parameters of two runs (their latest checkpoints): max |a-b| ≤ TOL · max |b| per
 * tensor. One exception: the attention key bias (rows [C, 2C) of c_attn.bias) has an
 * exactly zero gradient (softmax is invariant to a per-query shift), so its gradient is
 * pure rounding noise that Adam normalizes into ±lr steps; any rounding difference (a
 * different float32 summation order: tied embedding copies summed per stage, data-parallel
 * shards) moves it by O(lr). Those elements are held to TOL at the model's scale (the
 * largest parameter of the model) instead.
 */
function closeParams(outA: string, outB: string, what: string, tol = TOL): void {
  closeCheckpointParams(outA, outB, what, tol, { bound: 'relative' });
}

/** Resumes the step-4 checkpoint of run `src` in layout l; its steps 5-8 and final parameters must match `ref`. */
async function resumeFrom(src: string, label: string, l: Layout, ref: { out: string; losses: Map<number, number> }, tol = TOL): Promise<void> {
  const out = tmp(label);
  cpSync(src, out, { recursive: true });
  rmSync(join(out, 'checkpoints', 'step-00000008'), { recursive: true });
  writeFileSync(join(out, 'checkpoints', 'latest'), 'step-00000004\n');
  const r = await run(label, l, ['--resume'], out);
  assert.match(r.log, /resumed from .*step-00000004 at step 4/);
  closeLosses(r.losses, ref.losses, `${label} (steps after the resume)`);
  closeParams(r.out, ref.out, label, tol);
}

test('pipeline layouts equal single-process training: pp=2 1F1B, pp=2 interleaved × 2 chunks (tied embeddings), pp=4 GPipe, pp=2 × dp=2 ZeRO-1', async () => {
  const base = await run('pp-base', {});
  const pp2 = await run('pp2-1f1b', { pp: 2 });
  closeLosses(pp2.losses, base.losses, 'pp=2 1f1b');
  closeParams(pp2.out, base.out, 'pp=2 1f1b');
  assert.match(pp2.log, /pipeline: 2 stages × 1 chunk\(s\), 1f1b, 4 micro-batches per step/);
  // The bubble is measured every step and printed beside its theory (p-1)/(m+p-1) = 1/5.
  assert.match(pp2.log, /bubble \d+\.\d% \(theory 20\.0%\)/);
  const rec = readFileSync(join(pp2.out, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string; bubble?: number; bubbleTheory?: number });
  const steps = rec.filter((r) => r.kind === 'step');
  assert.ok(steps.every((r) => typeof r.bubble === 'number' && r.bubble >= 0 && r.bubble < 1 && r.bubbleTheory === 0.2), 'bubble in metrics.jsonl');

  const tiedBase = await run('pp-base-tied', { tied: true });
  const inter = await run('pp2-interleaved', { pp: 2, schedule: 'interleaved', chunks: 2, tied: true });
  closeLosses(inter.losses, tiedBase.losses, 'pp=2 interleaved, tied');
  closeParams(inter.out, tiedBase.out, 'pp=2 interleaved, tied');
  assert.match(inter.log, /theory 11\.1%/); // (p-1)/(v·m+p-1) = 1/9

  const pp4 = await run('pp4-gpipe', { pp: 4, schedule: 'gpipe' });
  closeLosses(pp4.losses, base.losses, 'pp=4 gpipe');
  closeParams(pp4.out, base.out, 'pp=4 gpipe');

  // With dp the replicas' GEMMs see half the rows, which rounds differently; Adam turns
  // that into ~1e-5..1e-4 relative parameter differences for plain dp=2 as well. So pp × dp
  // must equal dp=2 without pipelining bit for bit, and single-process training as dp does.
  const dp2 = await run('dp2', { dp: 2 });
  const ppdp = await run('pp2dp2', { pp: 2, dp: 2, zero: 1 });
  closeLosses(ppdp.losses, base.losses, 'pp=2 × dp=2 ZeRO-1 vs one process');
  closeParams(ppdp.out, base.out, 'pp=2 × dp=2 ZeRO-1 vs one process', DP_TOL);
  assert.deepEqual([...ppdp.losses], [...dp2.losses], 'pp=2 × dp=2 vs dp=2: losses');
  closeParams(ppdp.out, dp2.out, 'pp=2 × dp=2 vs dp=2', 0);

  // Checkpoints move between layouts: the step-4 checkpoint of the interleaved pp=2 run
  // resumes in one process, and the single-process one at pp=4 GPipe.
  await resumeFrom(inter.out, 'resume-pp2i-to-pp1', { tied: true }, tiedBase);
  await resumeFrom(base.out, 'resume-pp1-to-pp4', { pp: 4, schedule: 'gpipe' }, base);
});

test('tensor × pipeline (× data) parallel: tp2×pp2 equals tp2, tp2×pp2×dp2 ZeRO-1 (8 processes) equals tp2×dp2, both match one process', async () => {
  // Tensor parallelism rounds differently from one process (split GEMMs and reductions),
  // like data parallelism; adding the pipeline must not change a bit.
  const base = await run('tp-base', {});
  const tp2 = await run('tp2', { tp: 2 });
  const tppp = await run('tp2pp2', { tp: 2, pp: 2 });
  assert.match(tppp.log, /mesh tp 2 × dp 1 × pp 2 .*pipeline: 2 stages/);
  assert.deepEqual([...tppp.losses], [...tp2.losses], 'tp2×pp2 vs tp2: losses');
  closeParams(tppp.out, tp2.out, 'tp2×pp2 vs tp2', 0);
  closeLosses(tppp.losses, base.losses, 'tp2×pp2 vs one process');
  closeParams(tppp.out, base.out, 'tp2×pp2 vs one process', DP_TOL);

  const tpdp = await run('tp2dp2', { tp: 2, dp: 2, zero: 1 });
  const all3 = await run('tp2pp2dp2', { tp: 2, pp: 2, dp: 2, zero: 1 });
  assert.match(all3.log, /mesh tp 2 × dp 2 × pp 2 .*pipeline: 2 stages.*ZeRO-1/);
  assert.deepEqual([...all3.losses], [...tpdp.losses], 'tp2×pp2×dp2 vs tp2×dp2: losses');
  closeParams(all3.out, tpdp.out, 'tp2×pp2×dp2 vs tp2×dp2', 0);
  closeLosses(all3.losses, base.losses, 'tp2×pp2×dp2 vs one process');
  closeParams(all3.out, base.out, 'tp2×pp2×dp2 vs one process', TPDP_TOL);
  // Saved at tp2×pp2×dp2, resumed at pp=4 GPipe (no tp, no dp).
  await resumeFrom(all3.out, 'resume-tp2pp2dp2-to-pp4', { pp: 4, schedule: 'gpipe' }, all3, TPDP_TOL);
});

test('invalid pipeline layouts are refused at start, naming the field, before any model is built', async () => {
  const data = await tinyData();
  const out = tmp('pp-bad');
  const bad = async (l: Layout, extra: string[], re: RegExp) => {
    const r = await runCli(['launch', '--nproc-per-node', String((l.pp ?? 1) * (l.dp ?? 1)), '--', 'train', ...args(data, out, l, extra)]);
    assert.notEqual(r.code, 0);
    assert.match(r.out, re);
  };
  await bad({ pp: 2 }, ['--train.gradAccum=1'], /train\.gradAccum \(micro-batches per step, 1\) must be at least parallel\.pp \(2\) for the 1f1b schedule/);
  await bad({ pp: 2, schedule: 'interleaved', chunks: 3 }, [], /model\.nLayer \(4\) must be at least parallel\.pp × chunks = 2 × 3 = 6/);
  await bad({ pp: 2, dp: 1, zero: 3 }, [], /parallel\.zero=3 cannot be combined with parallel\.pp > 1/);
});

test('a rank killed mid-pipeline stops every other rank by itself within the watchdog time, naming the rank and the point-to-point operation', async () => {
  // Ranks are started directly (no launcher to tear the job down), so each survivor must
  // notice the loss through its own pipeline traffic and exit.
  const data = await tinyData();
  const out = tmp('pp-kill');
  const token = randomBytes(16).toString('hex');
  const store = await TcpStoreServer.start({ host: '127.0.0.1', port: 0, token });
  const world = 4;
  const a = args(data, out, { pp: 4, schedule: 'gpipe' }, ['--train.steps=200', '--train.evalEvery=100']);
  let killedAt = 0;
  try {
    const children = Array.from({ length: world }, (_, rank) => spawn(process.execPath, [CLI, 'train', ...a], {
      env: {
        ...process.env, ATHANOR_RANK: String(rank), ATHANOR_WORLD_SIZE: String(world), ATHANOR_LOCAL_RANK: String(rank), ATHANOR_LOCAL_WORLD_SIZE: String(world),
        ATHANOR_MASTER_ADDR: '127.0.0.1', ATHANOR_MASTER_PORT: String(store.port), ATHANOR_STORE_TOKEN: token, ATHANOR_STORE_HOSTED: '1',
        ATHANOR_WATCHDOG_S: '20', ATHANOR_QUIET: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    const results = children.map((child, rank) => new Promise<{ rank: number; code: number | null; out: string; exitedAt: number }>((resolve) => {
      let o = '';
      const onData = (c: Buffer) => {
        o += c;
        if (rank === 0 && !killedAt && /step 4: checkpoint/.test(o)) {
          killedAt = Date.now();
          children[2]!.kill('SIGKILL'); // a middle stage: both neighbours talk to it
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      const t = setTimeout(() => child.kill('SIGKILL'), 240_000);
      child.on('close', (code) => { clearTimeout(t); resolve({ rank, code, out: o, exitedAt: Date.now() }); });
    }));
    const rs = await Promise.all(results);
    assert.ok(killedAt > 0, `never reached the step-4 checkpoint:\n${rs[0]!.out.slice(-2000)}`);
    for (const r of rs) {
      if (r.rank === 2) continue;
      assert.notEqual(r.code, 0, `rank ${r.rank} should fail:\n${r.out.slice(-1500)}`);
      const waited = (r.exitedAt - killedAt) / 1000;
      assert.ok(waited < 20, `rank ${r.rank} took ${waited} s to exit after the kill (watchdog 20 s)`);
    }
    // Every survivor exits with the CLI's error line (not a crash with a stack trace) naming
    // a point-to-point transfer and the dead stage: a receive sees the lost connection, a
    // send the broken pipe; rank 0 (which talks only to rank 1) may learn it through the
    // group abort or as the first rank lost.
    const cause = /lost connection to rank 2|sending to rank 2 failed|first to last: 2/;
    for (const r of [rs[0]!, rs[1]!, rs[3]!]) {
      const line = r.out.split('\n').find((l) => l.startsWith(`athanor: rank ${r.rank}: `));
      assert.ok(line, `rank ${r.rank}: no error line:\n${r.out.slice(-1500)}`);
      // The operation in flight is named: usually the send/recv with the dead stage; the last
      // stage may instead be in the step's loss broadcast over the pipeline group.
      assert.match(line, r.rank === 0 ? /(send to|recv from) rank \d \(tag \d+, #\d+\) \(group 'pp'|#\d+ in group 'pp'/ : /(send to|recv from) rank 2 \(tag \d+, #\d+\) \(group 'pp'|#\d+ in group 'pp' .*rank 2/);
      assert.match(line, cause);
    }
  } finally {
    await store.close();
  }
});

test('pipeline under mpirun (MPI point-to-point) equals one process bit for bit', async (t) => {
  if (spawnSync('which', ['mpirun']).status !== 0) { t.skip('mpirun not installed (Debian: openmpi-bin)'); return; }
  const data = await tinyData();
  const base = await run('mpi-pp-base', {});
  const out = tmp('mpi-pp');
  const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, CLI, 'train', ...args(data, out, { pp: 2 })],
    { encoding: 'utf8', timeout: 180_000, env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_WATCHDOG_S: '60' } });
  assert.equal(r.status, 0, (r.stdout + r.stderr).slice(-3000));
  assert.match(r.stdout + r.stderr, /pipeline: 2 stages/);
  assert.deepEqual([...stepLosses(out)], [...base.losses]);
  closeParams(out, base.out, 'pp=2 under mpirun', 0);
});
