// Every collective against a reference, for world sizes 1-4, all dtypes, sizes 0/1/7/1000003,
// over the Unix-socket and TCP transports (real processes on loopback).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runRanks } from './helpers/dist-harness.js';
import type { RankOutput } from './helpers/dist-harness.js';

function checkAll(outs: RankOutput[], world: number, backend: string): void {
  for (const o of outs) {
    assert.equal(o.code, 0, `rank ${o.rank} exited ${o.code ?? o.signal}\n${o.stderr}\n${o.stdout.slice(-2000)}`);
    assert.ok(o.result, `rank ${o.rank} printed no result\n${o.stdout}`);
    assert.deepEqual(o.result.failures, [], `rank ${o.rank}: ${(o.result.failures as string[]).slice(0, 10).join('\n')}`);
    assert.equal(o.result.world, world);
    assert.equal(o.result.backend, world === 1 ? 'local' : backend);
  }
  // Non-integer data: bit-identical results on every rank.
  for (const o of outs) assert.deepEqual(o.result!.hashes, outs[0]!.result!.hashes, `rank ${o.rank} differs from rank 0`);
}

test('collectives, world size 1', async () => {
  checkAll(await runRanks({ world: 1 }), 1, 'local');
});

for (const backend of ['unix', 'tcp']) {
  for (const world of [2, 3, 4]) {
    test(`collectives over ${backend}, world size ${world}`, async () => {
      checkAll(await runRanks({ world, env: { ATHANOR_BACKEND: backend } }), world, backend);
    });
  }
}

test('collectives over unix when peers refuse single-copy reads (falls back to inline sends), world size 3', async () => {
  checkAll(await runRanks({ world: 3, env: { ATHANOR_BACKEND: 'unix', ATHANOR_CMA: 'refuse' } }), 3, 'unix');
});

test('collectives over unix without the single-copy path and without native reduction loops, world size 2', async () => {
  checkAll(await runRanks({ world: 2, env: { ATHANOR_BACKEND: 'unix', ATHANOR_CMA: '0', ATHANOR_DIST_NATIVE: '0' } }), 2, 'unix');
});

test('tcp between two loopback addresses (127.0.0.2 and 127.0.0.3, different host ids: auto picks tcp)', async () => {
  const outs = await runRanks({
    world: 2,
    env: { ATHANOR_BACKEND: 'auto', DIST_SIZES: '0,7,1000003', DIST_DTYPES: 'float32,bfloat16' },
    perRankEnv: (r) => ({ ATHANOR_BIND_ADDR: `127.0.0.${r + 2}`, ATHANOR_HOST_ID: `fake-host-${r}` }),
  });
  checkAll(outs, 2, 'tcp');
});

test('sub-groups from ParallelDims (tp=2, ep=2 borrowed from dp) over real processes', async () => {
  const outs = await runRanks({ world: 4, env: { DIST_MODE: 'mesh', DIST_TP: '1', DIST_EP: '2' } });
  for (const o of outs) {
    assert.equal(o.code, 0, o.stderr);
    const g = o.result!.groups as Record<string, { ranks: number[]; mask: number }>;
    for (const d of Object.keys(g)) assert.equal(g[d]!.mask, g[d]!.ranks.reduce((m, x) => m | (1 << x), 0), `${d} on rank ${o.rank}`);
  }
  const outs2 = await runRanks({ world: 4, env: { DIST_MODE: 'mesh', DIST_TP: '2' } });
  for (const o of outs2) {
    const g = o.result!.groups as Record<string, { ranks: number[]; mask: number }>;
    assert.deepEqual(g.tp!.ranks, o.rank < 2 ? [0, 1] : [2, 3]);
    assert.deepEqual(g.dp!.ranks, o.rank % 2 === 0 ? [0, 2] : [1, 3]);
    for (const d of Object.keys(g)) assert.equal(g[d]!.mask, g[d]!.ranks.reduce((m, x) => m | (1 << x), 0));
  }
});
