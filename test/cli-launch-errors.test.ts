// Errors after distributed start-up end the job: under `athanor launch` every rank
// prints the error, closes (or abandons) its store, sockets and communication thread,
// and exits non-zero, and the launcher reports it; each path runs with a time limit
// (a hang is killed and reported as such). And every verb answers --help with exit 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runCli, tmp, tinyData, tinyArgs } from './helpers/train-fixture.js';

const LIMIT_MS = 90_000;

async function launchFails(label: string, extra: string[], message: RegExp): Promise<void> {
  const data = await tinyData();
  const t0 = Date.now();
  const r = await runCli(['launch', '--nproc-per-node', '2', '--', 'train', ...tinyArgs(data, tmp(label)), ...extra], { timeoutMs: LIMIT_MS });
  const s = ((Date.now() - t0) / 1000).toFixed(1);
  assert.equal(r.signal, null, `${label}: the job hung and was killed after ${s} s:\n${r.out.slice(-2000)}`);
  assert.notEqual(r.code, 0, `${label}: exited 0:\n${r.out.slice(-2000)}`);
  assert.match(r.out, message, r.out.slice(-2000));
  assert.match(r.out, /athanor launch: rank \d \(local rank \d, pid \d+\) exited with code 1/, r.out.slice(-2000));
}

test('launch: parallel.dp that does not match the ranks started exits non-zero on every rank', () =>
  launchFails('dp-mismatch', ['--parallel.dp=3'], /\[rank [01]\] athanor: parallel\.dp × parallel\.tp × parallel\.pp = 3 × 1 × 1 = 3, but the world size is 2/));

test('launch: an invalid tensor-parallel layout (nHead 3 with tp 2) exits non-zero', () =>
  launchFails('tp-layout', ['--parallel.dp=1', '--parallel.tp=2', '--model.nHead=3', '--model.dModel=48'], /\[rank [01]\] athanor: .*parallel\.tp/));

test('launch: an error after the communication thread started (missing data) exits non-zero', () =>
  launchFails('no-data', ['--parallel.dp=2', '--data.dir=/nonexistent/athanor-data'], /\[rank [01]\] athanor: .*data\.dir '\/nonexistent\/athanor-data' does not exist/));

test('every verb answers --help with its usage and exit 0', async () => {
  const top = await runCli(['--help']);
  assert.equal(top.code, 0, top.out);
  const verbs = [...top.out.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]!);
  assert.ok(verbs.length >= 7 && verbs.includes('launch') && verbs.includes('train'), `verbs: ${verbs.join(', ')}`);
  for (const v of verbs) {
    for (const flag of ['--help', '-h']) {
      const r = await runCli([v, flag], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, `athanor ${v} ${flag} exited ${r.code}:\n${r.out}`);
      assert.match(r.out, new RegExp(`athanor ${v}\\b`), `athanor ${v} ${flag} printed no usage:\n${r.out}`);
      assert.doesNotMatch(r.out, /unknown option|unknown command/, `athanor ${v} ${flag}`);
    }
  }
});
