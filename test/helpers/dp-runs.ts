// Training runs for the data-parallel parity tests (parallel-dp, parallel-hsdp): one CLI
// run per layout on the tiny fixture, its per-step losses, and comparisons of losses and
// final parameters (read from each run's last checkpoint, which is layout-independent).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CheckpointReader, latestCheckpoint } from '../../src/io/checkpoint.js';
import { tinyData, tinyArgs, runCli, stepLosses, tmp } from './train-fixture.js';

export const TOL = 1e-6;
// Parameters after 8 (120) steps, max |a - b| / max(max |b|, 0.02) per tensor: measured
// ≤ 5.7e-5 (dp=4 vs dp=1: the gradient sums run in another float32 order and Adam
// normalises the rounding in small gradients into O(lr) relative steps); a lost or
// misplaced update (one Adam step is lr on O(0.01..0.1) weights) is ≥ 1e-2.
export const PTOL = 1e-4;

/** Where each run's losses came from, so that its final parameters can be compared too. */
export const outOf = new WeakMap<Map<number, number>, string>();

/** Model parameters (not optimizer state) of the newest checkpoint of a run. */
export function paramsOfRun(out: string): Map<string, Float32Array> {
  const dir = latestCheckpoint(join(out, 'checkpoints'));
  assert.ok(dir, `${out}: no checkpoint`);
  const r = new CheckpointReader(dir);
  try {
    return new Map(r.names().filter((n) => !n.startsWith('optim.')).map((n) => [n, r.readFull(n) as Float32Array]));
  } finally {
    r.close();
  }
}

/** Final parameters of two runs: bit-identical with tol 0, else max |a - b| / max(max |b|, 0.02) per tensor <= tol. */
export function sameParams(a: Map<number, number>, b: Map<number, number>, what: string, tol: number): void {
  const pa = paramsOfRun(outOf.get(a)!), pb = paramsOfRun(outOf.get(b)!);
  assert.deepEqual([...pa.keys()].sort(), [...pb.keys()].sort(), `${what}: parameter names`);
  let worst = 0;
  for (const [n, x0] of pa) {
    let x = x0, y = pb.get(n)!;
    if (tol === 0) { assert.deepEqual(x, y, `${what}: parameter ${n}`); continue; }
    if (n.endsWith('attn.c_attn.bias')) {
      // The key bias has an exactly-zero true gradient (softmax is invariant to adding
      // q·b_k to every score of a row): its gradient is rounding noise that Adam scales
      // to ±lr steps, so it is not comparable across layouts. Compare q and v biases.
      const C = x.length / 3;
      x = Float32Array.from([...x.subarray(0, C), ...x.subarray(2 * C)]);
      y = Float32Array.from([...y.subarray(0, C), ...y.subarray(2 * C)]);
    }
    // Scale: the tensor's largest value, but at least the init std (0.02). Biases start at
    // zero and move by ~lr per step, so their own magnitude after a few steps would turn
    // float32 reduction-order noise (amplified by Adam's normalisation) into a large ratio.
    let d = 0, m = 0.02;
    for (let i = 0; i < y.length; i++) { d = Math.max(d, Math.abs(x[i]! - y[i]!)); m = Math.max(m, Math.abs(y[i]!)); }
    worst = Math.max(worst, d / m);
    assert.ok(d <= tol * m, `${what}: parameter ${n} differs by ${d} (max |value| ${m}, relative ${d / m} > ${tol})`);
  }
  if (tol > 0) console.log(`${what}: final parameters within ${worst.toExponential(2)} (relative, tolerance ${tol})`);
}

// Kill tests train long enough (LONG steps, a checkpoint every 4) that the kill lands
// mid-run however slowly the test process reacts; the resume starts from whatever
// checkpoint was last committed.
export const LONG = ['--train.steps=120', '--train.evalEvery=40'];

export const outDirs = new Map<string, string>();

export async function run(label: string, dp: number, zero: number, extra: string[] = []): Promise<Map<number, number>> {
  const data = await tinyData();
  const out = tmp(label);
  outDirs.set(label, out);
  const args = [...tinyArgs(data, out), `--parallel.dp=${dp}`, `--parallel.zero=${zero}`, `--train.microBatch=${8 / dp}`, ...extra];
  const r = dp === 1 ? await runCli(['train', ...args]) : await runCli(['launch', '--nproc-per-node', String(dp), '--', 'train', ...args]);
  assert.equal(r.code, 0, `${label} failed:\n${r.out.slice(-3000)}`);
  const losses = stepLosses(out);
  const expected = extra.includes(LONG[0]!) ? 120 : 8;
  assert.equal(losses.size, expected, `${label}: expected ${expected} steps, got ${losses.size}`);
  outOf.set(losses, out);
  return losses;
}

export function close(a: Map<number, number>, b: Map<number, number>, what: string, tol = TOL): void {
  for (const [s, l] of a) {
    const o = b.get(s)!;
    assert.ok(Math.abs(l - o) <= tol * Math.abs(o), `${what}: step ${s} loss ${l} vs ${o}`);
  }
}

