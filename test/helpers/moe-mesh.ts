// Runs of `athanor train` with an MoE model in mesh layouts (pp, tp, dp), and the checks
// the MoE × mesh tests share: every step's loss, the final parameters and the MoE metrics
// against single-process training.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tinyData, tinyArgs, runCli, stepLosses, tmp } from './train-fixture.js';
import { closeCheckpointParams } from './checkpoint-params.js';

/** Relative tolerance of losses and parameters (the parity bound). */
export const TOL = 1e-5;

/**
 * 4 MoE layers (4 experts, top-2, capacity 1.25 so tokens are dropped, Switch aux loss and
 * router z-loss, a shared expert), 4 micro-batches of 2 rows per step.
 */
export const MOE = ['--model.nLayer=4', '--model.moe.experts=4', '--model.moe.every=1', '--model.moe.dFF=64', '--model.moe.capacityFactor=1.25',
  '--model.moe.zLossCoef=1e-3', '--model.moe.sharedExpert=true', '--train.gradAccum=4', '--model.tieEmbeddings=false'];

export interface MeshLayout { pp?: number; dp?: number; tp?: number; schedule?: string; chunks?: number; zero?: number }

export interface MeshRun { out: string; losses: Map<number, number>; log: string }

export async function runMesh(label: string, l: MeshLayout, extra: string[] = [], out = tmp(label)): Promise<MeshRun> {
  const data = await tinyData();
  const world = (l.pp ?? 1) * (l.dp ?? 1) * (l.tp ?? 1);
  const a = meshArgs(data, out, l, extra);
  const r = world === 1 ? await runCli(['train', ...a]) : await runCli(['launch', '--nproc-per-node', String(world), '--', 'train', ...a], { timeoutMs: 240_000 });
  assert.equal(r.code, 0, `${label} failed:\n${r.out.slice(-3000)}`);
  return { out, losses: stepLosses(out), log: r.out };
}

export function meshArgs(data: string, out: string, l: MeshLayout, extra: string[] = []): string[] {
  const dp = l.dp ?? 1;
  return [...tinyArgs(data, out), ...MOE, `--train.microBatch=${2 / dp}`,
    `--parallel.pp=${l.pp ?? 1}`, `--parallel.dp=${dp}`, `--parallel.tp=${l.tp ?? 1}`, `--parallel.zero=${l.zero ?? 0}`,
    `--parallel.pipelineSchedule=${l.schedule ?? '1f1b'}`, `--parallel.pipelineChunks=${l.chunks ?? 2}`, ...extra];
}

export function closeLosses(a: Map<number, number>, b: Map<number, number>, what: string, tol = TOL): void {
  assert.ok(a.size > 0 && a.size === b.size, `${what}: ${a.size} vs ${b.size} steps`);
  for (const [s, l] of a) {
    const o = b.get(s)!;
    assert.ok(Math.abs(l - o) <= tol * Math.abs(o), `${what}: step ${s} loss ${l} vs ${o}`);
  }
}

/**
 * Final parameters (latest checkpoints): max |a-b| ≤ tol per element (parameters are
 * O(0.02..1); the 1e-5, as the ep parity tests), except the attention key bias
 * (rows [C, 2C) of c_attn.bias), whose exact gradient is zero so Adam turns rounding noise
 * into ±lr steps: held to tol at the model's scale (as parallel-pp).
 */
export function closeParams(outA: string, outB: string, what: string, tol = TOL): void {
  closeCheckpointParams(outA, outB, what, tol, {
    bound: 'absolute',
    shapes: true,
    names: (names) => assert.ok(names.some((n) => n.includes('.moe.experts.')) && names.some((n) => n.includes('.moe.router.')), `${what}: MoE parameters in the checkpoint`),
  });
}

interface MoeMetrics { dropRate: number; maxLoad: number; load: number[][]; auxLoss: number; zLoss: number; entropy: number }

export function moeMetrics(out: string): Map<number, MoeMetrics> {
  const m = new Map<number, MoeMetrics>();
  for (const line of readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line) as { kind: string; step: number; moe?: MoeMetrics };
    if (r.kind === 'step' && r.moe) m.set(r.step, r.moe);
  }
  return m;
}

/**
 * The per-step MoE metrics of every layer: the per-expert loads (integers) and drop rate
 * exactly (the same tokens reach the same experts and are dropped), aux / z loss and router
 * entropy within tol.
 */
export function sameMoeMetrics(a: string, b: string, what: string, tol = TOL): void {
  const ma = moeMetrics(a), mb = moeMetrics(b);
  assert.ok(mb.size > 0 && ma.size === mb.size, `${what}: MoE metrics on ${ma.size} vs ${mb.size} steps`);
  for (const [s, x] of ma) {
    const y = mb.get(s)!;
    assert.deepEqual(x.load, y.load, `${what}: step ${s} per-expert load`);
    assert.equal(x.load.length, 4, `${what}: step ${s} reports all 4 MoE layers`);
    assert.equal(x.dropRate, y.dropRate, `${what}: step ${s} drop rate`);
    for (const k of ['auxLoss', 'zLoss', 'entropy'] as const) {
      assert.ok(Math.abs(x[k] - y[k]) <= tol * Math.abs(y[k]), `${what}: step ${s} ${k} ${x[k]} vs ${y[k]}`);
    }
    assert.ok(y.auxLoss > 0 && y.zLoss > 0, `${what}: step ${s} has auxiliary losses to check`);
  }
}
