// The loopback network emulator adds the latency and bandwidth cap it claims (measured;
// upper bounds allow 150 ms of event-loop delay: the test machine may be heavily loaded;
// lower bounds are exact by construction, upper bounds are generous: the machine is loaded).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { NetEmulatorProxy } from '../bench/net-emulator.js';

function echoServer(): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer((c) => { c.setNoDelay(true); c.on('data', (d) => c.write(d)); c.on('error', () => undefined); });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Median round trip (ms) of `n` one-byte ping-pongs. */
async function pingMs(sock: Socket, n: number): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((r) => { sock.once('data', () => r()); sock.write(Buffer.from([i & 255])); });
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[n >> 1]!;
}

/** Seconds to send `bytes` and get them all echoed back. */
async function transferS(sock: Socket, bytes: number): Promise<number> {
  const t0 = performance.now();
  let got = 0;
  await new Promise<void>((r) => {
    const on = (d: Buffer): void => { got += d.length; if (got >= bytes) { sock.off('data', on); r(); } };
    sock.on('data', on);
    sock.write(Buffer.alloc(bytes, 7));
  });
  return (performance.now() - t0) / 1000;
}

test('net emulator: the added round trip is the configured one', async () => {
  const echo = await echoServer();
  const port = (echo.address() as AddressInfo).port;
  try {
    const direct = await open(port);
    const base = await pingMs(direct, 15);
    direct.destroy();
    for (const rtt of [1, 5, 20]) {
      const p = await NetEmulatorProxy.start({ port }, { rttMs: rtt });
      const s = await open(p.port);
      const m = await pingMs(s, 15);
      s.destroy();
      await p.close();
      assert.ok(m >= rtt, `rtt ${rtt} ms: measured ${m.toFixed(2)} ms is below the configured round trip`);
      assert.ok(m < rtt + base + 150, `rtt ${rtt} ms: measured ${m.toFixed(2)} ms (direct ${base.toFixed(2)} ms) adds far more than configured`);
    }
  } finally {
    echo.close();
  }
});

test('net emulator: jitter keeps order and stays within its bound', async () => {
  const echo = await echoServer();
  const port = (echo.address() as AddressInfo).port;
  const p = await NetEmulatorProxy.start({ port }, { rttMs: 4, jitterMs: 6, seed: 3 });
  try {
    const s = await open(p.port);
    // 50 numbered messages sent back to back must come back complete and in order.
    const want = Buffer.from(Array.from({ length: 50 }, (_, i) => i));
    const got: number[] = [];
    await new Promise<void>((r) => {
      s.on('data', (d: Buffer) => { got.push(...d); if (got.length >= 50) r(); });
      for (let i = 0; i < 50; i++) s.write(want.subarray(i, i + 1));
    });
    s.removeAllListeners('data');
    assert.deepEqual(got, [...want]);
    const m = await pingMs(s, 15);
    assert.ok(m >= 4, `median ${m.toFixed(2)} ms below the 4 ms base round trip`);
    assert.ok(m < 4 + 2 * 6 + 150, `median ${m.toFixed(2)} ms far above round trip + jitter`);
    s.destroy();
  } finally {
    await p.close();
    echo.close();
  }
});

test('net emulator: the bandwidth cap limits throughput', async () => {
  const echo = await echoServer();
  const port = (echo.address() as AddressInfo).port;
  const bw = 4 << 20; // 4 MiB/s each way
  const p = await NetEmulatorProxy.start({ port }, { rttMs: 0, bandwidthBytesPerSec: bw });
  try {
    const s = await open(p.port);
    const bytes = 1 << 20;
    const t = await transferS(s, bytes);
    s.destroy();
    // Up then down through the same cap: at least one transmission time (both overlap when pipelined).
    assert.ok(t >= bytes / bw, `1 MiB through a 4 MiB/s link took ${t.toFixed(3)} s, faster than the cap allows`);
    assert.ok(t < 2 * bytes / bw + 2, `1 MiB through a 4 MiB/s link took ${t.toFixed(3)} s`);
    assert.equal(p.counters.bytesUp, bytes);
    assert.equal(p.counters.bytesDown, bytes);
  } finally {
    await p.close();
    echo.close();
  }
});

test('net emulator: a server connection that dies closes the client side', async () => {
  const accepted: Socket[] = [];
  const echo = await new Promise<Server>((resolve) => {
    const s = createServer((c) => { accepted.push(c); c.on('data', (d) => c.write(d)); c.on('error', () => undefined); });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
  const p = await NetEmulatorProxy.start({ port: (echo.address() as AddressInfo).port }, { rttMs: 2 });
  try {
    const s = await open(p.port);
    s.on('error', () => undefined);
    await pingMs(s, 2);
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    for (const c of accepted) c.destroy();
    await closed;
  } finally {
    await p.close();
    echo.close();
  }
});

test('net emulator: bad link settings are refused', () => {
  assert.throws(() => NetEmulatorProxy.start({ port: 1 }, { rttMs: -1 }), /rttMs/);
  assert.throws(() => NetEmulatorProxy.start({ port: 1 }, { rttMs: 1, bandwidthBytesPerSec: -5 }), /bandwidthBytesPerSec/);
});
