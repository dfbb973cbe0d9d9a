// Shared-memory transport between embedding clients and servers on one host
// (src/recsys/shm-region.ts): the ring allocator, the descriptor checks, a bad attach, and
// the end-to-end equality of the shared-memory and socket paths (answers, optimizer state,
// push results bit for bit), including requests too large for the region (socket fallback)
// and a server restarted under a client (the region is attached again).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';
import type { EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import { EmbeddingClient } from '../src/recsys/embedding-client.js';
import { FrameReader, MsgType, ProtocolError, RESPONSE, decodeShmDescriptor, encodeFrame, encodeJsonFrame, encodeShmRequest, type FrameHeader } from '../src/recsys/protocol.js';
import { ShmRing, SHM_NONCE_BYTES, createShmRegion } from '../src/recsys/shm-region.js';
import { skipUnless } from './helpers/require-native.js';

const HAVE_SHM = ((): boolean => { const r = createShmRegion(1 << 16); r?.map.unmap(); return r !== null; })();
const SKIP = skipUnless(HAVE_SHM, 'shared memory (koffi + Linux /dev/shm)');

test('shm ring: FIFO blocks, wrap-around, out-of-order frees reclaimed in order, -1 when full', () => {
  const r = new ShmRing(SHM_NONCE_BYTES + 1024);
  const a = r.alloc(300), b = r.alloc(300), c = r.alloc(300);
  assert.deepEqual([a, b, c], [SHM_NONCE_BYTES, SHM_NONCE_BYTES + 320, SHM_NONCE_BYTES + 640]);
  assert.equal(r.alloc(200), -1, 'no room after c, none before a');
  r.free(b); // out of order: nothing reclaimed yet
  assert.equal(r.alloc(200), -1);
  r.free(a); // a and b come back
  const d = r.alloc(500);
  assert.equal(d, SHM_NONCE_BYTES, 'wraps to the start');
  assert.equal(r.alloc(200), -1, 'wrapped: only the gap up to c');
  r.free(c);
  assert.equal(r.alloc(200), SHM_NONCE_BYTES + 512);
  assert.throws(() => r.free(12345), /no live block/);
});

test('shm descriptors: ranges outside the region, unaligned or overlapping are refused', () => {
  const enc = (reqOff: number, reqLen: number, respOff: number, respCap: number): Uint8Array => encodeShmRequest(MsgType.LOOKUP, 1, { reqOff, reqLen, respOff, respCap }).subarray(16);
  assert.deepEqual(decodeShmDescriptor(enc(64, 100, 168, 50), 4096), { reqOff: 64, reqLen: 100, respOff: 168, respCap: 50 });
  assert.throws(() => decodeShmDescriptor(enc(64, 5000, 0, 0), 4096), ProtocolError);
  assert.throws(() => decodeShmDescriptor(enc(66, 8, 128, 8), 4096), /8-aligned/);
  assert.throws(() => decodeShmDescriptor(enc(64, 100, 128, 50), 4096), /overlap/);
  assert.throws(() => decodeShmDescriptor(new Uint8Array(12), 4096), /16 bytes/);
});

const CONFIG: EmbeddingServerConfigInput = {
  seed: 3, maxFrameBytes: 1 << 20, capacity: 5000,
  groups: [{ id: 1, dim: 8 }, { id: 2, dim: 24, optimizer: { kind: 'adam', lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 } }],
  optimizer: { kind: 'adagrad', lr: 0.05, eps: 1e-8, initialAccumulator: 0.1 },
};

test('shared memory and socket, Unix and TCP, give bit-identical lookups, state and pushes; big requests fall back to the socket', { skip: SKIP }, async () => {
  const a = await launchEmbeddingServers({ numShards: 2, config: CONFIG });
  const b = await launchEmbeddingServers({ numShards: 2, config: CONFIG });
  // 64 KiB of region: the 3000-id batches below do not fit and take the socket.
  // One client on TCP loopback only; the other moves to the servers' Unix sockets (same host) and shared memory.
  const sock = await EmbeddingClient.connect({ servers: a.endpoints(), token: a.token, sharedMemoryBytes: 0, unixSocket: false });
  const shm = await EmbeddingClient.connect({ servers: b.endpoints(), token: b.token, sharedMemoryBytes: 64 << 10 });
  try {
    assert.deepEqual(sock.sharedMemory, [false, false]);
    assert.deepEqual(shm.sharedMemory, [true, true]);
    assert.deepEqual(sock.unixSocket, [false, false]);
    assert.deepEqual(shm.unixSocket, [true, true]);
    let x = 7;
    const rnd = (): number => { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; return x / 4294967296; };
    for (let step = 0; step < 12; step++) {
      const group = 1 + (step % 2), n = step % 4 === 3 ? 3000 : 40 + step * 7, dim = group === 1 ? 8 : 24;
      const ids = Array.from({ length: n }, () => BigInt(Math.floor(rnd() * rnd() * 4000)));
      const ra = sock.route(group, ids), rb = shm.route(group, ids);
      const stateFor = new Uint8Array(ra.routing.uShard.length).map((_, i) => (i % 3 === 0 ? 1 : 0));
      const la = await sock.lookupDistinct(group, ra, { stateFor }), lb = await shm.lookupDistinct(group, rb, { stateFor });
      assert.deepEqual(lb.rows, la.rows, `step ${step}: rows`);
      assert.deepEqual(lb.state, la.state, `step ${step}: optimizer state`);
      const g = new Float32Array(n * dim).map(() => rnd() - 0.5);
      const pa = await sock.pushGrads(group, ra, g), pb = await shm.pushGrads(group, rb, g);
      assert.deepEqual(pb, pa, `step ${step}: push results`);
      assert.deepEqual(await shm.lookup(group, ids, { readOnly: true }), await sock.lookup(group, ids, { readOnly: true }), `step ${step}: rows after the push`);
    }
  } finally {
    sock.close(); shm.close();
    await a.stop(); await b.stop();
  }
});

function frames(s: Socket): { next(): Promise<{ h: FrameHeader; p: Uint8Array }> } {
  const q: Array<{ h: FrameHeader; p: Uint8Array }> = [], waiters: Array<(f: { h: FrameHeader; p: Uint8Array }) => void> = [];
  const rd = new FrameReader(1 << 20);
  s.on('data', (d: Buffer) => rd.push(d, (h, p) => { const w = waiters.shift(); if (w) w({ h, p }); else q.push({ h, p }); }));
  return { next: () => new Promise((r) => { const f = q.shift(); if (f) r(f); else waiters.push(r); }) };
}

test('a bad shm attach or a shared-memory frame without a region gets a clear error and the connection goes on', { skip: SKIP }, async () => {
  const cl = await launchEmbeddingServers({ numShards: 1, config: CONFIG });
  const s = connect({ host: '127.0.0.1', port: cl.servers[0]!.port });
  try {
    await new Promise<void>((r) => s.once('connect', () => r()));
    const f = frames(s);
    s.write(encodeFrame(MsgType.AUTH, 1, Buffer.from(cl.token)));
    assert.equal((await f.next()).h.type, MsgType.AUTH | RESPONSE);
    s.write(encodeShmRequest(MsgType.LOOKUP, 2, { reqOff: 64, reqLen: 16, respOff: 128, respCap: 64 }));
    let r = await f.next();
    assert.equal(r.h.type, MsgType.ERROR | RESPONSE);
    assert.match(Buffer.from(r.p).toString(), /without an attached region/);
    const region = createShmRegion(1 << 16);
    assert.ok(region, 'shared memory is available on this Linux test machine');
    s.write(encodeJsonFrame(MsgType.SHM_ATTACH, 3, { pid: region.pid, fd: region.fd, bytes: 1 << 16, nonce: '0'.repeat(32) }));
    r = await f.next();
    assert.equal(r.h.type, MsgType.ERROR | RESPONSE);
    assert.match(Buffer.from(r.p).toString(), /nonce/);
    s.write(encodeJsonFrame(MsgType.SHM_ATTACH, 4, { pid: region.pid, fd: 'x', bytes: 1 << 16, nonce: region.nonce }));
    r = await f.next();
    assert.match(Buffer.from(r.p).toString(), /field 'fd'/);
    // Another file this process has open is not a region, whatever the nonce says.
    const otherDir = mkdtempSync(join(tmpdir(), 'shm-other-'));
    const other = join(otherDir, 'f');
    writeFileSync(other, Buffer.alloc(1 << 16));
    const ofd = openSync(other, 'r+');
    s.write(encodeJsonFrame(MsgType.SHM_ATTACH, 7, { pid: process.pid, fd: ofd, bytes: 1 << 16, nonce: '0'.repeat(32) }));
    r = await f.next();
    closeSync(ofd);
    rmSync(otherDir, { recursive: true, force: true });
    assert.match(Buffer.from(r.p).toString(), /not an embedding-client region/);
    s.write(encodeJsonFrame(MsgType.SHM_ATTACH, 5, { pid: region.pid, fd: region.fd, bytes: 1 << 16, nonce: region.nonce }));
    r = await f.next();
    assert.equal(r.h.type, MsgType.SHM_ATTACH | RESPONSE);
    s.write(encodeFrame(MsgType.PING, 6));
    assert.equal((await f.next()).h.type, MsgType.PING | RESPONSE);
    region.map.unmap();
  } finally {
    s.destroy();
    await cl.stop();
  }
});

test('a restarted server maps the client region again; requests sent while it was down are answered through it', { skip: SKIP }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shm-reconnect-'));
  const cfg: EmbeddingServerConfigInput = { seed: 5, groups: [{ id: 0, dim: 4 }], optimizer: { kind: 'sgd', lr: 1 } };
  const cl = await launchEmbeddingServers({ numShards: 1, config: cfg });
  const ids = Array.from({ length: 50 }, (_, i) => BigInt(3 * i + 1));
  const client = await EmbeddingClient.connect({ servers: cl.endpoints(), token: cl.token, wireDtype: 'float32', reconnect: { timeoutMs: 30_000, initialDelayMs: 20 } });
  try {
    assert.deepEqual(client.sharedMemory, [true]);
    await client.pushGrads(0, ids, new Float32Array(ids.length * 4).fill(0.25));
    await client.dump(join(dir, 'ck'), 'ck1');
    const atCk = await client.lookup(0, ids, { readOnly: true });
    await cl.kill(0);
    const pending = client.lookup(0, ids, { readOnly: true });
    pending.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 200));
    await cl.restart(0, { loadDir: join(dir, 'ck') });
    assert.deepEqual(await pending, atCk);
    assert.deepEqual(client.sharedMemory, [true]);
  } finally {
    client.close();
    await cl.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a client pointed at a forwarder (the latency proxy) stays behind it: no Unix-socket shortcut around the emulated network; with sharedMemoryBytes 0 its rows cross the forwarder too', { skip: SKIP }, async () => {
  const { NetEmulatorProxy } = await import('../bench/net-emulator.js');
  const s = await launchEmbeddingServers({ numShards: 1, config: CONFIG });
  const ep = s.endpoints()[0]!;
  const proxy = await NetEmulatorProxy.start({ host: ep.host, port: ep.port }, { rttMs: 0 });
  const direct = await EmbeddingClient.connect({ servers: [ep], token: s.token, sharedMemoryBytes: 64 << 10 });
  const behind = await EmbeddingClient.connect({ servers: [{ host: '127.0.0.1', port: proxy.port }], token: s.token, sharedMemoryBytes: 64 << 10 });
  const wire = await EmbeddingClient.connect({ servers: [{ host: '127.0.0.1', port: proxy.port }], token: s.token, sharedMemoryBytes: 0 });
  try {
    assert.deepEqual(direct.unixSocket, [true], 'a direct client on this host takes the Unix socket');
    assert.deepEqual(behind.unixSocket, [false], 'a client behind a forwarder stays on it');
    assert.deepEqual(wire.unixSocket, [false]);
    // Behind the forwarder, a client on the server's host may still share memory: the
    // requests (descriptors) cross the forwarder, and so its delay; the rows do not.
    assert.deepEqual(behind.sharedMemory, [true]);
    assert.deepEqual(wire.sharedMemory, [false], 'sharedMemoryBytes 0: everything over the socket');
    const ids = Array.from({ length: 64 }, (_, i) => BigInt(i + 1));
    const rowBytes = ids.length * 8 * 2; // group 1 has dim 8; rows travel as bf16 by default
    const want = await direct.lookup(1, ids, { readOnly: true });
    for (const [c, rowsCross] of [[behind, false], [wire, true]] as const) {
      const up = proxy.counters.bytesUp, down = proxy.counters.bytesDown;
      assert.deepEqual(await c.lookup(1, ids, { readOnly: true }), want);
      assert.ok(proxy.counters.bytesUp > up, 'the request went through the proxy');
      const got = proxy.counters.bytesDown - down;
      assert.ok(rowsCross ? got >= rowBytes : got < rowBytes, `rows (${rowBytes} bytes) ${rowsCross ? 'came' : 'did not come'} through the proxy: ${got} bytes`);
    }
  } finally {
    direct.close(); behind.close(); wire.close();
    await proxy.close();
    await s.stop();
  }
});
