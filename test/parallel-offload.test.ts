// parallel.offload=disk (ZeRO-Infinity style): fp32 master weights and AdamW moments in a
// per-rank file, streamed in chunks through two buffers. The update is AdamW's
// element-wise kernel on the same values in the same order, so offload must equal the
// in-memory optimizer BIT FOR BIT: in-process (small chunks, many chunk boundaries) and
// through the CLI with real processes at dp=1, dp=2 under ZeRO-1/2/3 and HSDP, in the losses
// of every step, the final parameters and the AdamW moments of the last checkpoint.
// Checkpoints stay layout-independent: offload → no offload and back resume exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, rmSync, writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fromStorage } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { AdamW } from '../src/optim/adamw.js';
import { OffloadAdamW } from '../src/parallel/offload-optimizer.js';
import { CheckpointReader, latestCheckpoint } from '../src/io/checkpoint.js';
import { presetConfig, validateTrainConfig } from '../src/train/config.js';
import { checkMemoryFits, explainAllocationFailure } from '../src/train/memory-fit.js';
import { tinyData, tinyArgs, runCli, stepLosses, tmp } from './helpers/train-fixture.js';

function randomParams(seed: number, sizes: number[][]) {
  const rng = new Rng(seed);
  return sizes.map((shape, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = fromStorage(Float32Array.from({ length: n }, () => rng.normal() * 0.1), shape, 'float32');
    t.name = `p${i}`;
    t.grad = fromStorage(new Float32Array(n), shape, 'float32');
    return t;
  });
}

test('OffloadAdamW equals AdamW bit for bit across chunk boundaries (params, moments, checkpoint segments)', async () => {
  // Sizes straddle the 64-element chunks (and the native kernels' size threshold), two
  // weight-decay groups, a clipping scale that changes every step.
  const shapes = [[33, 17], [130], [64], [5, 40], [3]];
  const a = randomParams(1, shapes), b = randomParams(1, shapes);
  const groups = (ps: typeof a) => [{ params: ps.filter((p) => p.ndim >= 2), weightDecay: 0.1 }, { params: ps.filter((p) => p.ndim < 2), weightDecay: 0 }];
  const dir = mkdtempSync(join(tmpdir(), 'athanor-offload-unit-'));
  const ref = new AdamW(groups(a), { lr: 3e-3, betas: [0.9, 0.95] });
  const off = new OffloadAdamW(groups(b), { lr: 3e-3, betas: [0.9, 0.95] }, { dir, rank: 7, chunk: 64 });
  assert.ok(existsSync(join(dir, 'athanor-offload-rank-7.bin')), 'the offload file is named with the rank');
  const rng = new Rng(2);
  for (let step = 1; step <= 5; step++) {
    for (let i = 0; i < a.length; i++) {
      for (let k = 0; k < a[i]!.size; k++) { const g = rng.normal(); a[i]!.grad!.data[k] = g; b[i]!.grad!.data[k] = g; }
    }
    const gradScale = 1 / step;
    ref.step({ gradScale });
    await off.stepAsync({ gradScale });
    for (let i = 0; i < a.length; i++) assert.deepEqual(b[i]!.data, a[i]!.data, `step ${step}: parameter p${i}`);
  }
  // A slot that starts inside its tensor (a ZeRO range) is placed at offset + start; its reads stay segment-relative.
  const segs = off.checkpointSegments((s) => ({ shape: [...s.param.shape], offset: 0 }));
  const shifted = off.checkpointSegments(() => ({ shape: [4096], offset: 1000 }));
  assert.deepEqual(shifted.map((x) => x.start), segs.map((x) => x.start + 1000));
  assert.equal(segs.length, 2 * a.length);
  for (const s of ref.slots()) {
    for (const part of ['exp_avg', 'exp_avg_sq']) {
      const seg = segs.find((x) => x.name === `optim.${part}.${s.name}`)!;
      const got = new Float32Array(seg.end - seg.start);
      // Read in two uneven pieces, as the checkpoint writer may.
      const cut = Math.floor(got.length / 3);
      seg.read!(0, got.subarray(0, cut));
      seg.read!(cut, got.subarray(cut));
      assert.deepEqual(got, s.state[part], `moment ${part} of ${s.name}`);
    }
  }
  assert.equal(off.residentBytes, 2 * 3 * 64 * 4, 'two chunk buffers of master + exp_avg + exp_avg_sq');
  off.store.remove();
  assert.deepEqual(readdirSync(dir), [], 'the offload file is deleted');
  rmSync(dir, { recursive: true, force: true });
});

test('parallel.offload settings are validated at start, naming the field', () => {
  const cfg = presetConfig('gpt-tiny');
  cfg.parallel.offload = 'disk';
  assert.throws(() => validateTrainConfig(cfg, 1), /parallel\.offloadDir/);
  const file = join(mkdtempSync(join(tmpdir(), 'athanor-offload-cfg-')), 'a-file');
  writeFileSync(file, 'x');
  cfg.parallel.offloadDir = join(file, 'sub');
  assert.throws(() => validateTrainConfig(cfg, 1), /parallel\.offloadDir .*is not a directory/);
  cfg.parallel.offloadDir = tmpdir();
  validateTrainConfig(cfg, 1);
  cfg.parallel.tp = 2;
  assert.throws(() => validateTrainConfig(cfg, 2), /parallel\.offload=disk with parallel\.tp=2/);
  cfg.parallel.tp = 1;
  (cfg.parallel as { offload: string }).offload = 'nvme';
  assert.throws(() => validateTrainConfig(cfg, 1), /parallel\.offload must be none or disk/);
});

test('a run that cannot fit is refused before allocation, naming parallel.offload; allocation failures say the same', () => {
  const cfg = presetConfig('gpt-small');
  const room = { bytes: 64 * 2 ** 20, source: 'a test limit' };
  assert.throws(() => checkMemoryFits(cfg, 0, 1, room), /out of memory: rank 0 needs about .* a test limit; rerun with --parallel\.offload=disk --parallel\.offloadDir=PATH/);
  cfg.parallel.offload = 'disk';
  assert.throws(() => checkMemoryFits(cfg, 0, 1, room), /parallel\.offload=disk is already on/);
  checkMemoryFits(cfg, 0, 1, { bytes: 2 ** 40, source: 'plenty' });
  cfg.parallel.offload = 'none';
  const e = explainAllocationFailure(new RangeError('Array buffer allocation failed'), cfg) as Error;
  assert.match(e.message, /out of memory: Array buffer allocation failed .*--parallel\.offload=disk --parallel\.offloadDir=PATH/);
  const other = new TypeError('unrelated');
  assert.equal(explainAllocationFailure(other, cfg), other);
});

/** Every tensor (parameters and optim.* moments) of a run's newest checkpoint. */
function checkpointOf(out: string): Map<string, Float32Array> {
  const dir = latestCheckpoint(join(out, 'checkpoints'));
  assert.ok(dir, `${out}: no checkpoint`);
  const r = new CheckpointReader(dir);
  try {
    return new Map(r.names().map((n) => [n, r.readFull(n) as Float32Array]));
  } finally {
    r.close();
  }
}

function sameRuns(a: string, b: string, what: string): void {
  assert.deepEqual([...stepLosses(a)], [...stepLosses(b)], `${what}: losses`);
  const ca = checkpointOf(a), cb = checkpointOf(b);
  assert.deepEqual([...ca.keys()].sort(), [...cb.keys()].sort(), `${what}: checkpoint tensors`);
  assert.ok([...ca.keys()].some((k) => k.startsWith('optim.exp_avg_sq.')), `${what}: the checkpoint holds the moments`);
  for (const [n, x] of ca) assert.deepEqual(x, cb.get(n), `${what}: ${n}`);
}

async function train(label: string, dp: number, zero: number, offload: boolean, extra: string[] = []): Promise<string> {
  const data = await tinyData();
  const out = tmp(label);
  const args = [...tinyArgs(data, out), `--parallel.dp=${dp}`, `--parallel.zero=${zero}`, `--train.microBatch=${8 / dp}`,
    ...(offload ? ['--parallel.offload=disk', `--parallel.offloadDir=${join(out, 'offload')}`] : []), ...extra];
  const r = await runCli(dp === 1 ? ['train', ...args] : ['launch', '--nproc-per-node', String(dp), '--', 'train', ...args]);
  assert.equal(r.code, 0, `${label} failed:\n${r.out.slice(-3000)}`);
  if (offload) {
    assert.match(r.out, /offloaded to .*athanor-offload-rank-0\.bin/, `${label}: the layout line names the offload file`);
    assert.deepEqual(readdirSync(join(out, 'offload')), [], `${label}: offload files are deleted when the run ends`);
  }
  return out;
}

test('offload=disk equals no offload bit for bit: dp=1, dp=2 with ZeRO-1/2/3, HSDP 2 × 2 (real processes)', async () => {
  sameRuns(await train('off-dp1', 1, 0, true), await train('mem-dp1', 1, 0, false), 'dp=1');
  for (const zero of [1, 2, 3]) {
    sameRuns(await train(`off-dp2z${zero}`, 2, zero, true), await train(`mem-dp2z${zero}`, 2, zero, false), `dp=2 ZeRO-${zero}`);
  }
  // HSDP: shards within groups of 2, two replica groups; each rank streams its own shard.
  const hsdp = ['--parallel.shardGroup=2'];
  sameRuns(await train('off-hsdp', 4, 3, true, hsdp), await train('mem-hsdp', 4, 3, false, hsdp), 'dp=4 HSDP 2 × 2');
});

/** Turns a finished run back into one that stopped after its step-4 checkpoint. */
function cutToStep4(out: string): string {
  const copy = tmp('cut');
  cpSync(out, copy, { recursive: true });
  const root = join(copy, 'checkpoints');
  rmSync(join(root, 'step-00000008'), { recursive: true, force: true });
  writeFileSync(join(root, 'latest'), 'step-00000004\n');
  return copy;
}

async function resume(out: string, offload: boolean): Promise<void> {
  const data = await tinyData();
  const args = [...tinyArgs(data, out), '--resume', ...(offload ? ['--parallel.offload=disk', `--parallel.offloadDir=${join(out, 'offload-resumed')}`] : [])];
  const r = await runCli(['train', ...args]);
  assert.equal(r.code, 0, r.out.slice(-3000));
  assert.match(r.out, /resumed from .*step-00000004 at step 4/);
}

test('checkpoints are layout-independent: offload → no offload and no offload → offload resume exactly', async () => {
  const whole = await train('ck-mem', 1, 0, false);
  const off = cutToStep4(await train('ck-off', 1, 0, true));
  await resume(off, false);
  sameRuns(off, whole, 'offload → no offload');
  const mem = cutToStep4(whole);
  await resume(mem, true);
  sameRuns(mem, whole, 'no offload → offload');
});
