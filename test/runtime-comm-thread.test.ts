// The communication thread as a Communicator over sockets (launcher-style ranks on
// loopback): every collective and send/recv on its world and on a sub-group (even / odd
// ranks), waitSync on shared and ordinary buffers. The MPI side is in runtime-mpi.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRanks } from './helpers/dist-harness.js';

for (const [backend, world] of [['unix', 3], ['tcp', 4]] as const) {
  test(`communication thread over ${backend}, ${world} ranks: world and sub-group collectives, send/recv, waitSync`, async () => {
    const outs = await runRanks({ world, env: { DIST_MODE: 'commthread', DIST_SIZES: '0,7,1001,100003', ATHANOR_BACKEND: backend } });
    for (const o of outs) {
      assert.equal(o.code, 0, `rank ${o.rank}: ${o.stderr.slice(-2000)}`);
      const res = o.result!;
      assert.equal(res.backend, backend);
      assert.deepEqual(res.failures, [], (res.failures as string[]).slice(0, 10).join('\n'));
      assert.deepEqual(res.hashes, outs[0]!.result!.hashes);
      assert.deepEqual(res.subRanks, [...Array(world).keys()].filter((x) => x % 2 === o.rank % 2));
    }
  });
}
