import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseLaunchArgs, resolveCommand, cliMainPath } from '../src/runtime/launcher.js';
import { WORKER } from './helpers/dist-harness.js';

const LAUNCHER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'runtime', 'launcher.js');

function runLauncher(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [LAUNCHER, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    c.stdout.on('data', (d) => { stdout += d; });
    c.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => c.kill('SIGKILL'), 50_000);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, stdout, stderr }); });
  });
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

test('launch args and command resolution', () => {
  const o = parseLaunchArgs(['--nproc-per-node', '4', '--nnodes=2', '--node-rank', '1', '--master-addr', '10.0.0.1', '--master-port', '29500', '--', 'train', '--config', 'x']);
  assert.deepEqual([o.nprocPerNode, o.nnodes, o.nodeRank, o.masterAddr, o.masterPort], [4, 2, 1, '10.0.0.1', 29500]);
  assert.deepEqual(resolveCommand(['train', '--config', 'x']), { file: process.execPath, args: [cliMainPath(), 'train', '--config', 'x'] });
  assert.deepEqual(resolveCommand(['athanor', 'eval']), { file: process.execPath, args: [cliMainPath(), 'eval'] });
  assert.deepEqual(resolveCommand(['python3', 'x.py']), { file: 'python3', args: ['x.py'] });
  assert.throws(() => parseLaunchArgs(['--nproc-per-node', '2']), /no command after '--'/);
  assert.throws(() => parseLaunchArgs(['--nproc-per-node', '0', '--', 'x']), /integer >= 1/);
  assert.throws(() => parseLaunchArgs(['--bogus', '--', 'x']), /unknown option '--bogus'/);
  assert.throws(() => parseLaunchArgs(['--nnodes', '2', '--', 'x']), /--master-port is required/);
});

test('launcher: ranks get env, output is prefixed, exit 0', async () => {
  const r = await runLauncher(['--nproc-per-node', '3', '--', 'node', WORKER], { DIST_MODE: 'launch-ok' });
  assert.equal(r.code, 0, r.stderr);
  for (let k = 0; k < 3; k++) assert.match(r.stdout, new RegExp(`^\\[rank ${k}\\] sum=3 rank=${k} world=3 env=${k}/3/${k}$`, 'm'));
});

for (const how of ['exit', 'kill'] as const) {
  test(`launcher: a rank that ${how === 'exit' ? 'exits 3' : 'is SIGKILLed'} takes the job down and is named`, async () => {
    const r = await runLauncher(['--nproc-per-node', '3', '--grace-s', '2', '--', 'node', WORKER], { DIST_MODE: 'launch-fail', DIST_VICTIM: '1', DIST_HOW: how });
    assert.notEqual(r.code, 0);
    if (how === 'exit') {
      assert.equal(r.code, 3);
      assert.match(r.stderr, /rank 1 \(local rank 1, pid \d+\) exited with code 3; terminating the other ranks/);
    } else {
      assert.match(r.stderr, /rank 1 \(local rank 1, pid \d+\) was killed by signal SIGKILL/);
    }
    // The other ranks (which would have idled for 60 s) are gone once the launcher returns.
    const pids = [...r.stdout.matchAll(/^\[rank (\d)\] hello from rank \d pid (\d+)$/gm)].map((m) => Number(m[2]));
    assert.equal(pids.length, 3, r.stdout);
    for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} still running`);
  });
}
