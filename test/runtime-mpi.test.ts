// The MPI transport (OpenMPI through koffi), run under mpirun. Skipped with the reason when
// libmpi or mpirun is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mpiUnavailableReason } from '../src/runtime/mpi.js';
import { WORKER, parseResult } from './helpers/dist-harness.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tinyData, tinyArgs, tmp, CLI } from './helpers/train-fixture.js';

function skipReason(): string | null {
  const r = mpiUnavailableReason();
  if (r) return r;
  if (spawnSync('mpirun', ['--version']).error) return 'mpirun is not on PATH (install openmpi-bin)';
  return null;
}
const skip = skipReason();

function mpirun(np: number, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const args = ['--allow-run-as-root', '--oversubscribe', '-np', String(np)];
    for (const k of Object.keys(env)) args.push('-x', k);
    const c = spawn('mpirun', [...args, process.execPath, WORKER], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    c.stdout.on('data', (d) => { stdout += d; });
    c.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => c.kill('SIGKILL'), 120_000);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
  });
}

for (const np of [1, 2, 3, 4]) {
  test(`MPI transport under mpirun -np ${np}`, { skip: skip ?? false }, async () => {
    // From 3 ranks the suite also runs on a sub-group (MPI_Comm_create_group) of the world.
    const r = await mpirun(np, { DIST_SIZES: np === 2 || np === 4 ? '0,1,7,1000003' : '0,1,7,1001', ATHANOR_BACKEND: 'auto', DIST_SUB: np >= 3 ? '1' : '0' });
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
    const results = r.stdout.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => parseResult(l)!);
    assert.equal(results.length, np, r.stdout);
    for (const res of results) {
      assert.equal(res.backend, 'mpi');
      assert.deepEqual(res.failures, [], (res.failures as string[]).slice(0, 10).join('\n'));
      assert.deepEqual(res.hashes, results[0]!.hashes);
    }
  });
}

test('socket transport under mpirun (store address shared through MPI_Bcast)', { skip: skip ?? false }, async () => {
  const r = await mpirun(2, { DIST_SIZES: '0,7,1001', DIST_DTYPES: 'float32,bfloat16', ATHANOR_BACKEND: 'tcp' });
  assert.equal(r.code, 0, r.stderr);
  const results = r.stdout.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => parseResult(l)!);
  assert.equal(results.length, 2);
  for (const res of results) { assert.equal(res.backend, 'tcp'); assert.deepEqual(res.failures, []); }
});

// The communication thread under mpirun: the whole collective suite (send/recv included) on
// its world and on a sub-group of it, over non-blocking MPI on duplicated communicators.
for (const np of [2, 3, 4]) {
  test(`communication thread over MPI, world and sub-groups, mpirun -np ${np}`, { skip: skip ?? false }, async () => {
    const r = await mpirun(np, { DIST_MODE: 'commthread', DIST_SIZES: '0,7,1001,100003' });
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
    const results = r.stdout.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => parseResult(l)!);
    assert.equal(results.length, np, r.stdout);
    for (const res of results) {
      assert.equal(res.backend, 'mpi');
      assert.deepEqual(res.failures, [], (res.failures as string[]).slice(0, 10).join('\n'));
      assert.deepEqual(res.hashes, results[0]!.hashes);
      assert.deepEqual(res.subRanks, [...Array(np).keys()].filter((x) => x % 2 === (res.rank as number) % 2));
    }
  });
}

// A receive whose message never comes: the watchdog names the rank, the op and the peer, and
// MPI_Abort ends every rank (a plain exit would leave the peer hung in MPI forever).
for (const via of ['thread', 'main']) {
  test(`MPI watchdog (${via === 'thread' ? 'communication thread' : 'main-thread communicator'}): a recv that never arrives ends the job naming rank, op and peer`, { skip: skip ?? false }, async () => {
    const r = await mpirun(2, { DIST_MODE: 'p2p-hang', DIST_VIA: via, ATHANOR_WATCHDOG_S: '2' });
    assert.equal(typeof r.code, 'number', `mpirun was killed by the test's timeout:\n${r.stderr}`);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stdout, /unexpected/);
    assert.match(r.stderr, /athanor watchdog: rank 0: recv from rank 1 \(tag 7(, #1)?\) in group 'world' \(mpi[^)]*\) did not complete within 2 s/);
    assert.match(r.stderr, via === 'thread' ? /ranks that did not arrive: 1 \(has sent 0 message\(s\) with tag 7 to rank 0/ : /still waiting for rank 1/);
  });
}

test('MPI watchdog (communication thread): a rank that skips a collective is named with its last op', { skip: skip ?? false }, async () => {
  const r = await mpirun(3, { DIST_MODE: 'thread-watchdog', DIST_SKIP: '2', ATHANOR_WATCHDOG_S: '2' });
  assert.equal(typeof r.code, 'number', `mpirun was killed by the test's timeout:\n${r.stderr}`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /athanor watchdog: rank [01]: allreduce#3 in group 'world' \(mpi, communication thread, ranks 0,1,2\) did not complete within 2 s; ranks that did not arrive: 2 \(last started barrier#2 in this group\)/);
});

for (const via of ['main', 'thread']) {
  test(`ParallelDims mesh (tp=2 x dp=2) over MPI sub-groups (${via === 'main' ? 'main thread' : 'communication thread'})`, { skip: skip ?? false }, async () => {
    const r = await mpirun(4, { DIST_MODE: 'mesh', DIST_TP: '2', DIST_VIA: via });
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(-3000));
    const results = r.stdout.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => parseResult(l)!);
    assert.equal(results.length, 4);
    for (const o of results) {
      assert.equal(o.backend, 'mpi');
      const rank = o.rank as number;
      const g = o.groups as Record<string, { ranks: number[]; mask: number }>;
      assert.deepEqual(g.tp!.ranks, rank < 2 ? [0, 1] : [2, 3]);
      assert.deepEqual(g.dp!.ranks, rank % 2 === 0 ? [0, 2] : [1, 3]);
      for (const d of Object.keys(g)) assert.equal(g[d]!.mask, g[d]!.ranks.reduce((m, x) => m | (1 << x), 0), `${d} on rank ${rank}`);
    }
  });
}

test('under mpirun, threads per rank default to cores ÷ ranks on the node (OMPI_COMM_WORLD_LOCAL_SIZE)', { skip: skip ?? false }, async () => {
  const data = await tinyData();
  const out = tmp('mpi-threads');
  const args = [...tinyArgs(data, out), '--parallel.dp=2', '--train.microBatch=4', '--train.steps=1', '--train.threads=0'];
  const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '2', '-x', 'ATHANOR_CORES', process.execPath, CLI, 'train', ...args],
    { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_CORES: '6' } });
  assert.equal(r.status, 0, (r.stdout + r.stderr).slice(-3000));
  const cfg = readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { kind: string; threads?: number }).find((x) => x.kind === 'config');
  assert.equal(cfg?.threads, 3);
});

for (const via of ['thread', 'main']) {
  test(`under mpirun a rank that fails after start-up ends the job (MPI_Abort, not a hung MPI_Finalize), ${via === 'thread' ? 'peer waiting on the communication thread' : 'peer waiting on the main thread'}`, { skip: skip ?? false }, async () => {
    const r = await mpirun(2, { DIST_MODE: 'rank-error', DIST_VIA: via, ATHANOR_WATCHDOG_S: '100' });
    assert.equal(typeof r.code, 'number', `mpirun was killed by the test's timeout:\n${r.stderr}`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /rank 1 failed on purpose/);
    assert.doesNotMatch(r.stderr, /watchdog/);
  });
}
