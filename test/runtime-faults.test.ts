// Hangs and failures: watchdog, collective mismatch, a peer dying mid-collective.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRanks } from './helpers/dist-harness.js';

for (const backend of ['unix', 'tcp']) {
  test(`watchdog (${backend}): rank 2 skips an allreduce; the others abort naming it and the op`, async () => {
    const outs = await runRanks({ world: 3, env: { ATHANOR_BACKEND: backend, DIST_MODE: 'watchdog', DIST_SKIP: '2', ATHANOR_WATCHDOG_S: '2' } });
    for (const o of outs) {
      assert.equal(o.code, 7, `rank ${o.rank}: ${o.stdout}${o.stderr}`);
      const msg = String(o.result!.error);
      assert.match(msg, /allreduce#3/);
      assert.match(msg, /ranks that did not arrive: 2 \(last started barrier#2/);
      assert.match(msg, /watchdog/);
    }
  });
}

test('collective mismatch (broadcast#2 vs allreduce#2) is detected and named', async () => {
  const outs = await runRanks({ world: 3, env: { DIST_MODE: 'mismatch', ATHANOR_WATCHDOG_S: '30' } });
  // Rank 0 (the broadcast root) only sends, so it may finish before anyone notices; whoever
  // detects the mismatch first tells the others why the group was aborted.
  for (const o of outs.filter((x) => x.rank !== 0 || x.code !== 0)) {
    assert.equal(o.code, 7, o.stderr);
    assert.match(String(o.result!.error), /mismatch.*this rank.* is in (allreduce#2 but rank 0 sent broadcast#2|broadcast#2 but rank [12] sent allreduce#2)/);
  }
});

for (const backend of ['unix', 'tcp']) {
  test(`peer death mid-collective (${backend}) fails fast naming the dead rank`, async () => {
    const outs = await runRanks({ world: 3, env: { ATHANOR_BACKEND: backend, DIST_MODE: 'peer-death', DIST_VICTIM: '1', ATHANOR_WATCHDOG_S: '60' } });
    assert.equal(outs[1]!.code, 9);
    for (const o of [outs[0]!, outs[2]!]) {
      assert.equal(o.code, 7, `rank ${o.rank}: ${o.stdout}${o.stderr}`);
      assert.match(String(o.result!.error), /lost connection to rank 1 /);
    }
  });
}
