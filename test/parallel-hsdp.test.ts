// ZeRO-3 at dp=4 and HSDP (parallel.shardGroup=2: 2 shard groups of 2 ranks, replicated)
// through the real launcher on loopback, against single-process training at the same
// global batch: every step's loss within 1e-6 (relative) and the final parameters within
// PTOL (helpers/dp-runs.ts says why parameters need more than 1e-6: Adam normalises the
// float32 reduction-order rounding of small gradients). Then checkpoints written by one
// layout resume in another (HSDP → ZeRO-1, ZeRO-3 dp=4 → dp=1) and continue like the
// uninterrupted single-process run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tinyData, tinyArgs, runCli, stepLosses, tmp } from './helpers/train-fixture.js';
import { TOL, PTOL, outOf, outDirs, sameParams, run, close } from './helpers/dp-runs.js';
import { validateTrainConfig, presetConfig } from '../src/train/config.js';
import { hsdpRanks } from '../src/parallel/hsdp.js';

/** Files that hold any segment of the newest checkpoint of a run. */
function checkpointFiles(out: string): Set<string> {
  const root = join(out, 'checkpoints');
  const step = readFileSync(join(root, 'latest'), 'utf8').trim();
  const m = JSON.parse(readFileSync(join(root, step, 'manifest.json'), 'utf8')) as { tensors: Record<string, { segments: { file: string }[] }> };
  return new Set(Object.values(m.tensors).flatMap((t) => t.segments.map((s) => s.file)));
}

const memo = new Map<string, Promise<Map<number, number>>>();
const once = (label: string, dp: number, zero: number, extra: string[] = []) => {
  if (!memo.has(label)) memo.set(label, run(label, dp, zero, extra));
  return memo.get(label)!;
};

test('HSDP groups: shard groups are neighbouring dp ranks, replica groups the same position in each', () => {
  // dp ranks (global) 10..15 in dp order, shard groups of 3.
  const dp = [10, 11, 12, 13, 14, 15];
  assert.deepEqual(hsdpRanks(dp, 4, 3), { shard: [13, 14, 15], replica: [11, 14], shardRank: 1, replicaRank: 1 });
  assert.deepEqual(hsdpRanks(dp, 0, 3), { shard: [10, 11, 12], replica: [10, 13], shardRank: 0, replicaRank: 0 });
  assert.deepEqual(hsdpRanks(dp, 5, 1), { shard: [15], replica: dp, shardRank: 0, replicaRank: 5 });
});

test('parallel.shardGroup is validated at start, naming the field', () => {
  const cfg = (over: Partial<{ dp: number; zero: 0 | 1 | 2 | 3; shardGroup: number; tp: number }>) => {
    const c = presetConfig('gpt-tiny');
    Object.assign(c.parallel, over);
    return c;
  };
  assert.throws(() => validateTrainConfig(cfg({ dp: 4, zero: 3, shardGroup: 3 }), 4), /parallel\.shardGroup \(3\) must divide parallel\.dp \(4\)/);
  assert.throws(() => validateTrainConfig(cfg({ dp: 4, zero: 2, shardGroup: 2 }), 4), /parallel\.shardGroup=2 needs parallel\.zero=3/);
  assert.throws(() => validateTrainConfig(cfg({ dp: 4, zero: 3, shardGroup: -1 }), 4), /parallel\.shardGroup must be a non-negative integer/);
  assert.throws(() => validateTrainConfig(cfg({ dp: 2, zero: 3, tp: 2 }), 4), /parallel\.zero=3 with parallel\.tp=2/);
  validateTrainConfig(cfg({ dp: 4, zero: 3, shardGroup: 2 }), 4);
  validateTrainConfig(cfg({ dp: 4, zero: 3, shardGroup: 0 }), 4);
});

test('ZeRO-3 at dp=4 and HSDP (dp=4, 2 shard groups of 2; also with 2 micro-steps) match single-process training', async () => {
  const base = await once('h-dp1', 1, 0);
  const z3 = await once('h-z3dp4', 4, 3);
  close(z3, base, 'ZeRO-3 dp=4 vs dp=1', TOL);
  sameParams(z3, base, 'ZeRO-3 dp=4 vs dp=1', PTOL);
  const hsdp = await once('h-hsdp', 4, 3, ['--parallel.shardGroup=2']);
  close(hsdp, base, 'HSDP vs dp=1', TOL);
  sameParams(hsdp, base, 'HSDP vs dp=1', PTOL);
  // Gradient accumulation: earlier micro-steps accumulate full-size, the last into staging.
  const acc = await once('h-hsdp-acc', 4, 3, ['--parallel.shardGroup=2', '--train.microBatch=1', '--train.gradAccum=2']);
  close(acc, base, 'HSDP × 2 micro-steps vs dp=1', TOL);
  sameParams(acc, base, 'HSDP × 2 micro-steps vs dp=1', PTOL);
  // The shards exist once: the first replica group (dp ranks 0 and 1) writes the checkpoint.
  assert.deepEqual([...checkpointFiles(outOf.get(hsdp)!)].sort(), ['rank-0.safetensors', 'rank-1.safetensors']);
  assert.deepEqual([...checkpointFiles(outOf.get(z3)!)].sort(), ['rank-0.safetensors', 'rank-1.safetensors', 'rank-2.safetensors', 'rank-3.safetensors']);
});

/** Copies a finished 8-step run, rewinds it to its step-4 checkpoint and resumes steps 5-8 in another layout. */
async function resumeAt4(from: Map<number, number>, label: string, dp: number, zero: number, extra: string[] = []): Promise<Map<number, number>> {
  const out = tmp(label);
  cpSync(outOf.get(from)!, out, { recursive: true });
  rmSync(join(out, 'checkpoints', 'step-00000008'), { recursive: true });
  writeFileSync(join(out, 'checkpoints', 'latest'), 'step-00000004\n');
  const data = await tinyData();
  const args = [...tinyArgs(data, out), `--parallel.dp=${dp}`, `--parallel.zero=${zero}`, `--train.microBatch=${8 / dp}`, ...extra, '--resume'];
  const r = dp === 1 ? await runCli(['train', ...args]) : await runCli(['launch', '--nproc-per-node', String(dp), '--', 'train', ...args]);
  assert.equal(r.code, 0, `${label}: ${r.out.slice(-3000)}`);
  assert.match(r.out, /resumed from .*step-00000004 at step 4/, `${label}: ${r.out.slice(-2000)}`);
  const rest = new Map([...stepLosses(out)].filter(([s]) => s > 4));
  assert.equal(rest.size, 4);
  outOf.set(rest, out);
  outDirs.set(label, out);
  return rest;
}

test('checkpoints resume across layouts: HSDP → ZeRO-1 (dp=2), ZeRO-3 dp=4 → dp=1', async () => {
  const base = await once('h-dp1', 1, 0);
  const hsdp = await once('h-hsdp', 4, 3, ['--parallel.shardGroup=2']);
  const z3 = await once('h-z3dp4', 4, 3);
  const a = await resumeAt4(hsdp, 'h-hsdp-z1', 2, 1);
  close(a, base, 'HSDP → ZeRO-1 dp=2', TOL);
  sameParams(a, base, 'HSDP → ZeRO-1 dp=2', PTOL);
  const b = await resumeAt4(z3, 'h-z3-dp1', 1, 0);
  close(b, base, 'ZeRO-3 dp=4 → dp=1', TOL);
  sameParams(b, base, 'ZeRO-3 dp=4 → dp=1', PTOL);
  // And back: a single-process checkpoint resumes under HSDP.
  const c = await resumeAt4(base, 'h-dp1-hsdp', 4, 3, ['--parallel.shardGroup=2']);
  close(c, base, 'dp=1 → HSDP', TOL);
  sameParams(c, base, 'dp=1 → HSDP', PTOL);
});
