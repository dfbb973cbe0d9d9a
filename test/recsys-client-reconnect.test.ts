// Client failover: a server killed with SIGKILL and restarted from a checkpoint is
// reconnected to with backoff; requests sent while it was down are answered by the new
// server (rows of the checkpoint); without reconnection they fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
import type { EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import { EmbeddingClient } from '../src/recsys/embedding-client.js';

const CONFIG: EmbeddingServerConfigInput = { seed: 5, groups: [{ id: 0, dim: 4 }], optimizer: { kind: 'sgd', lr: 1 } };
const IDS = Array.from({ length: 64 }, (_, i) => BigInt(i * 13 + 1));

test('client reconnects to a restarted server and resends unanswered requests; without reconnect they fail', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'reconnect-'));
  const cl = await launchEmbeddingServers({ numShards: 2, config: CONFIG });
  const events: Array<{ shard: number; step: number }> = [];
  const client = await EmbeddingClient.connect({
    servers: cl.endpoints(), token: cl.token, wireDtype: 'float32',
    reconnect: { timeoutMs: 30_000, initialDelayMs: 20, onReconnect: (shard, info) => events.push({ shard, step: info.step }) },
  });
  const plain = await cl.connect({ wireDtype: 'float32' });
  try {
    const g = new Float32Array(IDS.length * 4).fill(0.5);
    await client.pushGrads(0, IDS, g);
    await client.dump(join(dir, 'ck'), 'ck1');
    const atCheckpoint = await client.lookup(0, IDS, { readOnly: true });
    await client.pushGrads(0, IDS, g); // lost on the shard that dies
    const afterPush = await client.lookup(0, IDS, { readOnly: true });
    assert.notDeepEqual(afterPush, atCheckpoint);
    await cl.kill(1);
    // Sent while shard 1 is down: waits, then goes to its replacement.
    const pendingLookup = client.lookup(0, IDS, { readOnly: true });
    pendingLookup.catch(() => undefined); // awaited below; a failed assertion before must not hide behind it
    await assert.rejects(plain.lookup(0, IDS, { readOnly: true }), /embedding server 1/);
    await new Promise((r) => setTimeout(r, 300));
    await cl.restart(1, { loadDir: join(dir, 'ck') });
    const rows = await pendingLookup;
    assert.equal(events.length, 1);
    assert.deepEqual(events[0], { shard: 1, step: 1 });
    // Shard 0 kept its update; shard 1's rows are the checkpoint's. Exactly one of the two per id.
    let fromCk = 0, kept = 0;
    for (let i = 0; i < IDS.length; i++) {
      const r = rows.subarray(4 * i, 4 * i + 4);
      if (r.every((x, j) => x === atCheckpoint[4 * i + j])) fromCk++;
      else if (r.every((x, j) => x === afterPush[4 * i + j])) kept++;
    }
    assert.equal(fromCk + kept, IDS.length);
    assert.ok(fromCk > 0 && kept > 0, `both shards hold rows (checkpoint ${fromCk}, kept ${kept})`);
    // And it keeps working.
    await client.pushGrads(0, IDS, g);
  } finally {
    client.close(); plain.close();
    await cl.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('client reconnection gives up after its timeout with the cause in the error', async () => {
  const cl = await launchEmbeddingServers({ numShards: 1, config: CONFIG });
  const client = await EmbeddingClient.connect({ servers: cl.endpoints(), token: cl.token, reconnect: { timeoutMs: 300, initialDelayMs: 20 } });
  try {
    await cl.kill(0);
    await assert.rejects(client.lookup(0, IDS), /embedding server 0 .*connection closed; no server came back within 300 ms/);
  } finally {
    client.close();
    await cl.stop();
  }
});
