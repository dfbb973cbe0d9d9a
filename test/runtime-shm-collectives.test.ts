// The tensor-parallel group's same-host shared-memory collectives (runtime/shm-collectives.ts
// through parallel/thread-group.ts) against exact references, on 2 and 3 ranks, fp32 and
// bf16 wires, sizes that make the regions grow; the same suite on the communication thread
// (ATHANOR_TP_SHM=0) must give the same bytes; a member that exits fails the others' next
// collective with its rank named.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runRanks } from './helpers/dist-harness.js';

const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'shm-group-worker.js');
const linux = process.platform === 'linux';

for (const world of [2, 3]) {
  test(`tensor-parallel collectives over shared memory equal the communication thread's, ${world} ranks`, async () => {
    const shm = await runRanks({ world, worker, env: { ATHANOR_BACKEND: 'unix' } });
    const thread = await runRanks({ world, worker, env: { ATHANOR_BACKEND: 'unix', ATHANOR_TP_SHM: '0' } });
    for (const [name, outs] of [['shm', shm], ['thread', thread]] as const) {
      for (const o of outs) {
        assert.equal(o.code, 0, `${name} rank ${o.rank}: ${o.stderr.slice(-2000)}`);
        assert.deepEqual(o.result!.failures, [], `${name} rank ${o.rank}`);
      }
    }
    for (const o of shm) assert.equal(o.result!.path, linux ? 'shm' : 'thread');
    for (const o of thread) assert.equal(o.result!.path, 'thread');
    // Every rank holds the same gathered and reduced bytes, on both paths (reduce-scatter chunks differ per rank).
    for (let r = 0; r < world; r++) assert.equal(shm[r]!.result!.hash, thread[r]!.result!.hash, `rank ${r}: shared memory and thread results differ`);
  });
}

test('a tensor-parallel member that exits fails the others\' next shared-memory collective, naming it', { skip: !linux }, async () => {
  const outs = await runRanks({ world: 2, worker, env: { ATHANOR_BACKEND: 'unix', SHM_MODE: 'dead' }, timeoutMs: 60_000 });
  assert.equal(outs[1]!.code, 3);
  assert.notEqual(outs[0]!.code, 0);
  assert.equal(outs[0]!.signal, null, 'rank 0 must exit by itself, not be killed by the harness');
  assert.match(outs[0]!.stderr, /rank 1 \(pid \d+\) exited before allReduce #2/);
});
