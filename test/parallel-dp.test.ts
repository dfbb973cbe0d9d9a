// Data parallelism and ZeRO through the real launcher: real rank processes on
// loopback. dp=2 and dp=4 must match dp=1 at the same global batch (tolerance 1e-6
// relative: different per-rank GEMM sizes round differently), ZeRO-1 and ZeRO-2 must
// equal plain DP bit for bit (same reductions, element-wise optimizer), ZeRO-3 within
// 1e-6 (block recomputation changes the order of residual-gradient additions).
// Every comparison covers the losses and the final parameters (read from each run's
// last checkpoint, which is layout-independent).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execSync, spawn, spawnSync } from 'node:child_process';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointReader, latestCheckpoint } from '../src/io/checkpoint.js';
import { tinyData, tinyArgs, runCli, stepLosses, tmp, CLI } from './helpers/train-fixture.js';
import { PTOL, LONG, outOf, outDirs, sameParams, run, close } from './helpers/dp-runs.js';
import { createServer } from 'node:net';

/** A TCP port that nothing is bound to on any address (node 0's launcher binds 0.0.0.0). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '0.0.0.0', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

test('dp=2 and dp=4 match dp=1; ZeRO-1/2 equal plain DP bit for bit; ZeRO-3 matches', async () => {
  const base = await run('dp1', 1, 0);
  const dp2 = await run('dp2', 2, 0);
  close(dp2, base, 'dp=2 vs dp=1');
  sameParams(dp2, base, 'dp=2 vs dp=1', PTOL);
  const z1 = await run('dp2z1', 2, 1);
  const z2 = await run('dp2z2', 2, 2);
  assert.deepEqual([...z1], [...dp2], 'ZeRO-1 vs DP');
  assert.deepEqual([...z2], [...dp2], 'ZeRO-2 vs DP');
  sameParams(z1, dp2, 'ZeRO-1 vs DP', 0);
  sameParams(z2, dp2, 'ZeRO-2 vs DP', 0);
  const z3 = await run('dp2z3', 2, 3);
  close(z3, dp2, 'ZeRO-3 vs DP');
  sameParams(z3, dp2, 'ZeRO-3 vs DP', PTOL);
  const dp4 = await run('dp4', 4, 0);
  close(dp4, base, 'dp=4 vs dp=1');
  sameParams(dp4, base, 'dp=4 vs dp=1', PTOL);
  const dp4z2 = await run('dp4z2', 4, 2);
  close(dp4z2, dp4, 'dp=4 ZeRO-2 vs dp=4', 1e-6);
  sameParams(dp4z2, dp4, 'dp=4 ZeRO-2 vs dp=4', 0);
});

/** Launches `dp` ranks, SIGKILLs one rank right after the step-4 checkpoint, and checks the launcher's report. */
async function killedRun(label: string, dp: number, zero: number): Promise<string> {
  const data = await tinyData();
  const out = tmp(label);
  const args = [...tinyArgs(data, out), `--parallel.dp=${dp}`, `--parallel.zero=${zero}`, `--train.microBatch=${8 / dp}`, ...LONG];
  let killedAt = 0;
  let victim = '';
  const r = await runCli(dp === 1 ? ['train', ...args] : ['launch', '--nproc-per-node', String(dp), '--', 'train', ...args], {
    onLine: (line, child) => {
      if (killedAt || !/step 4: checkpoint/.test(line)) return;
      killedAt = Date.now();
      if (dp === 1) { child.kill('SIGKILL'); return; }
      const pids = execSync(`ps -o pid= --ppid ${child.pid}`).toString().trim().split(/\s+/);
      victim = pids[pids.length - 1]!;
      process.kill(Number(victim), 'SIGKILL');
    },
  });
  assert.ok(killedAt > 0, `${label}: never reached the step-4 checkpoint:\n${r.out.slice(-2000)}`);
  assert.notEqual(r.code, 0, `${label}: the run should fail once a rank is killed`);
  if (dp > 1) {
    // Promptly = torn down by the launcher (or peer-death detection), not by a watchdog
    // timeout or the test's own time limit. Checked by what happened, not by a wall-clock
    // bound, which a loaded machine can exceed.
    assert.equal(r.signal, null, `${label}: the launcher did not exit by itself:\n${r.out.slice(-2000)}`);
    assert.doesNotMatch(r.out, /athanor watchdog/, `${label}: a rank waited for the watchdog instead of being torn down:\n${r.out.slice(-2000)}`);
    assert.match(r.out, new RegExp(`rank \\d+ \\(local rank \\d+, pid ${victim}\\) was killed by signal SIGKILL`), r.out.slice(-2000));
  }
  return out;
}

/** Resumes a killed run with another layout; returns the losses of the steps it ran. */
async function resume(out: string, dp: number, zero: number): Promise<Map<number, number>> {
  const data = await tinyData();
  const args = [...tinyArgs(data, out), `--parallel.dp=${dp}`, `--parallel.zero=${zero}`, `--train.microBatch=${8 / dp}`, ...LONG, '--resume'];
  const r = dp === 1 ? await runCli(['train', ...args]) : await runCli(['launch', '--nproc-per-node', String(dp), '--', 'train', ...args]);
  assert.equal(r.code, 0, r.out.slice(-3000));
  const m = /resumed from .*step-(\d{8}) at step (\d+)/.exec(r.out);
  assert.ok(m, `no resume line:\n${r.out.slice(-2000)}`);
  const from = Number(m[2]);
  assert.ok(from >= 4 && from < 120, `resumed from step ${from}`);
  const all = stepLosses(out);
  const rest = new Map([...all].filter(([s]) => s > from));
  outOf.set(rest, out);
  return rest;
}

test('a killed rank stops the job promptly; checkpoints resume across layouts (dp=2 ZeRO-3 → dp=1 and dp=4, dp=1 → dp=2 ZeRO-3)', async () => {
  const base = await run('base', 1, 0, LONG);
  const z3 = await killedRun('kill-z3', 2, 3);
  const z3copy = tmp('kill-z3-copy');
  cpSync(z3, z3copy, { recursive: true });
  // Layout switches only change rounding (dp=1 vs dp=2 drift stays ~1e-7 over 120
  // steps); lost or misplaced state (a moment, a shard, weight decay) moves it > 1e-4.
  const XTOL = 1e-5;
  const both = (r: Map<number, number>, what: string): void => { close(r, base, what, XTOL); sameParams(r, base, what, PTOL); };
  both(await resume(z3, 1, 0), 'dp=2 ZeRO-3 → dp=1');
  both(await resume(z3copy, 4, 2), 'dp=2 ZeRO-3 → dp=4 ZeRO-2');
  const single = await killedRun('kill-dp1', 1, 0);
  both(await resume(single, 2, 3), 'dp=1 → dp=2 ZeRO-3');
});

test('data parallelism under mpirun (gradients on the communication thread over MPI) matches the launcher bit for bit, ZeRO-0/2/3', async (t) => {
  const which = spawnSync('which', ['mpirun']);
  if (which.status !== 0) { t.skip('mpirun not installed (Debian: openmpi-bin)'); return; }
  const data = await tinyData();
  for (const zero of [0, 2, 3]) {
    const launched = await run(`mpi-ref-z${zero}`, 2, zero);
    const out = tmp(`mpi-z${zero}`);
    const args = [...tinyArgs(data, out), '--parallel.dp=2', `--parallel.zero=${zero}`, '--train.microBatch=4'];
    const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath, CLI, 'train', ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ATHANOR_QUIET: '1' } });
    assert.equal(r.status, 0, (r.stdout + r.stderr).slice(-3000));
    // The layout line names the backend each path actually used.
    assert.match(r.stdout + r.stderr, /mpi( transport)? \(gradient thread: mpi\)/);
    assert.deepEqual([...stepLosses(out)], [...launched], `ZeRO-${zero}`);
    assert.deepEqual(finalParams(out), finalParams(outDirs.get(`mpi-ref-z${zero}`)!), `ZeRO-${zero}: final parameters`);
  }
});

/** Every model parameter of the last checkpoint (optimizer state left out), as raw bits. */
function finalParams(out: string): Record<string, string> {
  const dir = latestCheckpoint(join(out, 'checkpoints'));
  assert.ok(dir, `no checkpoint under ${out}`);
  const r = new CheckpointReader(dir);
  try {
    const o: Record<string, string> = {};
    for (const n of r.names().filter((x) => !x.startsWith('optim.'))) {
      const d = r.readFull(n) as Float32Array;
      o[n] = Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64');
    }
    assert.ok(Object.keys(o).length > 0);
    return o;
  } finally { r.close(); }
}

test('two "nodes" (separate launchers, distinct host ids, 127.0.0.2 vs 127.0.0.3 over TCP) train like one launcher', async () => {
  const data = await tinyData();
  const ref = await run('mn-ref', 4, 1);
  const out = tmp('multinode');
  const args = [...tinyArgs(data, out), '--parallel.dp=4', '--parallel.zero=1', '--train.microBatch=2'];
  // A port that was free a moment ago (the kernel's pick), not a random one that another
  // process on this machine (a parallel test suite, an outgoing connection) may hold.
  const port = String(await freePort());
  const node = (rank: number) => new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, 'launch', '--nproc-per-node', '2', '--nnodes', '2', '--node-rank', String(rank),
      '--master-addr', '127.0.0.2', '--master-port', port, '--', 'train', ...args], {
      env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_STORE_TOKEN: 'multinode-test-secret', ATHANOR_HOST_ID: `node${rank}`, ATHANOR_BIND_ADDR: `127.0.0.${2 + rank}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let o = '';
    child.stdout.on('data', (c) => { o += c; });
    child.stderr.on('data', (c) => { o += c; });
    const t = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code) => { clearTimeout(t); resolve({ code, out: o }); });
  });
  const [a, b] = await Promise.all([node(0), node(1)]);
  assert.equal(a.code, 0, a.out.slice(-2000));
  assert.equal(b.code, 0, b.out.slice(-2000));
  assert.match(a.out, /4 ranks, ZeRO-1, .* tcp( transport)? \(gradient thread: tcp\)/);
  assert.deepEqual([...stepLosses(out)], [...ref]);
});

test('gradient accumulation: dp=2 × 2 micro-steps (ZeRO-0 and ZeRO-3) matches dp=1 with the whole batch', async () => {
  const base = await run('acc-base', 1, 0);
  for (const [label, dp, zero, micro, what] of [['acc-1x2', 1, 0, 4, 'dp=1 accumulation 2'], ['acc-z0', 2, 0, 2, 'dp=2 ZeRO-0 accumulation 2'],
    ['acc-z3', 2, 3, 2, 'dp=2 ZeRO-3 accumulation 2']] as const) {
    const r = await run(label, dp, zero, [`--train.microBatch=${micro}`, '--train.gradAccum=2']);
    close(r, base, what);
    sameParams(r, base, what, PTOL);
  }
});
