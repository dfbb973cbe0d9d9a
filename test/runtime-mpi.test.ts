// The MPI transport (OpenMPI through koffi), run under mpirun. Skipped with the reason when
// libmpi or mpirun is missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { spawn, spawnSync } from 'node:child_process';
import { mpiUnavailableReason } from '../src/runtime/mpi.js';
import { WORKER, parseResult } from './helpers/dist-harness.js';

function skipReason(): string | null {
  const r = mpiUnavailableReason();
  if (r) return r;
  if (spawnSync('mpirun', ['--version']).error) return 'mpirun is not on PATH (install openmpi-bin)';
  return null;
}
const reason = skipReason();
const skip = skipUnless(reason === null, `MPI (${reason})`, 'mpi') || null;

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
    const r = await mpirun(np, { DIST_SIZES: np === 2 || np === 4 ? '0,1,7,1000003' : '0,1,7,1001', ATHANOR_BACKEND: 'auto' });
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
