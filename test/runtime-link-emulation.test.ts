// The emulated network between ranks (src/runtime/link-emulation.ts) adds the latency and
// bandwidth cap it claims, measured on real socket ranks (two in this process, over TCP and
// Unix sockets): lower bounds are exact by construction, upper bounds allow 150 ms of
// event-loop delay on a loaded machine. Collectives still give the right answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TcpStoreServer } from '../src/runtime/tcp-store.js';
import { initProcessGroup, type ProcessGroup } from '../src/runtime/init.js';
import { parseLinkSpec, type LinkSpec } from '../src/runtime/link-emulation.js';

let prefixes = 0;
async function pair(backend: 'tcp' | 'unix', emulate?: LinkSpec): Promise<{ pgs: ProcessGroup[]; close(): Promise<void> }> {
  const token = randomBytes(16).toString('hex');
  const store = await TcpStoreServer.start({ host: '127.0.0.1', port: 0, token });
  const prefix = `test/emu${prefixes++}`;
  const pgs = await Promise.all([0, 1].map((rank) => initProcessGroup({
    rank, worldSize: 2, masterAddr: '127.0.0.1', masterPort: store.port, token, hostStore: false, prefix, backend, watchdogS: 120,
    ...(emulate ? { emulate } : {}),
  })));
  return { pgs, close: async () => { await Promise.all(pgs.map((p) => p.destroy())); await store.close(); } };
}

/** Median ms of n ping-pongs (rank 0 -> 1 -> 0) of `bytes` bytes. */
async function pingPong(pgs: ProcessGroup[], n: number, floats: number): Promise<number> {
  const a = new Float32Array(floats), b = new Float32Array(floats);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await Promise.all([
      (async () => { await pgs[0]!.send(a, 1, i); await pgs[0]!.recv(a, 1, i); })(),
      (async () => { await pgs[1]!.recv(b, 0, i); await pgs[1]!.send(b, 0, i); })(),
    ]);
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  return times[n >> 1]!;
}

test('link emulation spec: parsed from the environment form, bad fields named', () => {
  assert.deepEqual(parseLinkSpec('rtt=5,jitter=1.5,bw=25e6'), { rttMs: 5, jitterMs: 1.5, bandwidthBytesPerSec: 25e6 });
  assert.throws(() => parseLinkSpec('rtt=-1'), /ATHANOR_EMULATE_LINK: 'rtt=-1'/);
  assert.throws(() => parseLinkSpec('jitter=2'), /'rtt=<ms>' is required/);
  assert.throws(() => parseLinkSpec('rtt=5,latency=3'), /'latency=3'/);
});

for (const backend of ['tcp', 'unix'] as const) {
  test(`link emulation (${backend}): a round trip between ranks takes the configured RTT`, async () => {
    const base = await pair(backend);
    const direct = await pingPong(base.pgs, 9, 1);
    await base.close();
    for (const rtt of [4, 20]) {
      const p = await pair(backend, { rttMs: rtt });
      try {
        const m = await pingPong(p.pgs, 9, 1);
        assert.ok(m >= rtt, `rtt ${rtt} ms: measured ${m.toFixed(2)} ms is below the configured round trip`);
        assert.ok(m < rtt + direct + 150, `rtt ${rtt} ms: measured ${m.toFixed(2)} ms (direct ${direct.toFixed(2)} ms) adds far more than configured`);
      } finally {
        await p.close();
      }
    }
  });
}

test('link emulation: the bandwidth cap holds, jitter stays within its bound, allreduce stays right', async () => {
  // 1 MiB each way at 20 MB/s: at least 2 x 52 ms of transmission.
  const p = await pair('tcp', { rttMs: 2, jitterMs: 3, bandwidthBytesPerSec: 20e6, seed: 4 });
  try {
    const m = await pingPong(p.pgs, 3, 1 << 18);
    const floor = 2 * ((1 << 20) / 20e6) * 1000 + 2;
    assert.ok(m >= floor, `1 MiB ping-pong took ${m.toFixed(1)} ms, below the ${floor.toFixed(1)} ms the cap implies`);
    assert.ok(m < floor + 2 * 3 + 250, `1 MiB ping-pong took ${m.toFixed(1)} ms, far above the ${floor.toFixed(1)} ms the cap implies`);
    const bufs = [new Float32Array(1000).fill(1), new Float32Array(1000).fill(2)];
    const t0 = performance.now();
    await Promise.all(p.pgs.map((g, r) => g.allReduce(bufs[r]!, 'sum')));
    assert.ok(performance.now() - t0 >= 1, 'an allreduce crosses the emulated link');
    for (const b of bufs) assert.ok(b.every((x) => x === 3));
  } finally {
    await p.close();
  }
});
