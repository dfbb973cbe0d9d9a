// Real server processes on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchEmbeddingServers, type EmbeddingCluster } from '../src/recsys/embedding-launch.js';
import type { EmbeddingServerConfigInput } from '../src/recsys/embedding-config.js';
import { EmbeddingClient } from '../src/recsys/embedding-client.js';
import { FrameReader, HEADER_BYTES, MAGIC, MsgType, RESPONSE, encodeFrame, encodeIdRequest, writeHeader } from '../src/recsys/protocol.js';
import { idsToPairs } from '../src/recsys/embedding-hash.js';

const CONFIG: EmbeddingServerConfigInput = {
  seed: 11,
  maxFrameBytes: 1 << 20,
  groups: [
    { id: 1, dim: 8, optimizer: { kind: 'adam', lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 } },
    { id: 2, dim: 3, optimizer: { kind: 'adagrad', lr: 0.1, eps: 1e-10, initialAccumulator: 0.01 } },
  ],
};

interface RawReply { type: number; text: string; closed: boolean }

/** Opens a raw socket, writes `bytes`, collects replies until the server closes or `wantReplies` arrive. */
function raw(port: number, bytes: Buffer[], wantReplies: number): Promise<RawReply[]> {
  return new Promise((resolve) => {
    const out: RawReply[] = [];
    const s: Socket = connect({ host: '127.0.0.1', port });
    const r = new FrameReader(1 << 22);
    let finished = false;
    const done = (closed: boolean): void => {
      if (finished) return;
      finished = true;
      if (closed) out.push({ type: -1, text: '', closed: true });
      s.destroy();
      resolve(out);
    };
    s.on('connect', () => { for (const b of bytes) s.write(b); });
    s.on('data', (d: Buffer) => {
      r.push(d, (h, p) => { out.push({ type: h.type, text: Buffer.from(p).toString('utf8').slice(0, 200), closed: false }); });
      if (out.length >= wantReplies) done(false);
    });
    s.on('error', () => undefined);
    s.on('close', () => done(true));
  });
}

const ids = (n: number, mul = 7): bigint[] => Array.from({ length: n }, (_, i) => BigInt(i * mul + 3));

test('bad frames cost only their own connection; other clients keep being served', async () => {
  const cl = await launchEmbeddingServers({ numShards: 1, config: CONFIG });
  const good = await cl.connect({ wireDtype: 'float32' });
  try {
    const port = cl.servers[0]!.port;
    const before = await good.lookup(1, ids(50));
    const auth = (t: string): Buffer => encodeFrame(MsgType.AUTH, 1, Buffer.from(t));
    const lookupFrame = (group = 1): Buffer => encodeIdRequest(MsgType.LOOKUP, 2, group, 'float32', 0, idsToPairs(group, [1n]), 0, 1);

    // No token first: closed.
    let r = await raw(port, [lookupFrame()], 5);
    assert.equal(r[0]!.type, MsgType.ERROR | RESPONSE);
    assert.match(r[0]!.text, /authentication required/);
    assert.ok(r.at(-1)!.closed);
    // Wrong token: closed.
    r = await raw(port, [auth('wrong'), lookupFrame()], 5);
    assert.match(r[0]!.text, /authentication failed/);
    assert.ok(r.at(-1)!.closed && r.length === 2, 'nothing answered after the failed auth');
    // Garbage bytes: closed.
    r = await raw(port, [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')], 5);
    assert.match(r[0]!.text, /bad magic/);
    assert.ok(r.at(-1)!.closed);
    // A huge length before authentication is refused before anything is buffered.
    const big = Buffer.alloc(HEADER_BYTES); writeHeader(big, MsgType.AUTH, 1, 1 << 30);
    r = await raw(port, [big], 5);
    assert.match(r[0]!.text, /exceeds the limit/);
    // Authenticated but oversized: refused and closed.
    const over = Buffer.alloc(HEADER_BYTES); writeHeader(over, MsgType.LOOKUP, 3, (1 << 20) + 1);
    r = await raw(port, [auth(cl.token), over], 5);
    assert.equal(r[0]!.type, MsgType.AUTH | RESPONSE);
    assert.match(r[1]!.text, /exceeds the limit/);
    assert.ok(r.at(-1)!.closed);
    // Authenticated, well-framed but malformed payloads: an error each, the connection stays.
    const truncated = lookupFrame().subarray(0, HEADER_BYTES + 12);
    const t2 = Buffer.from(truncated); t2.writeUInt32LE(12, 12); // header now says 12 bytes: claims 1 id, carries half
    const unknownGroup = lookupFrame(9);
    const unknownType = encodeFrame(0x55, 7);
    r = await raw(port, [auth(cl.token), t2, unknownGroup, unknownType, encodeFrame(MsgType.PING, 8)], 5);
    assert.deepEqual(r.map((x) => x.type), [MsgType.AUTH | RESPONSE, MsgType.ERROR | RESPONSE, MsgType.ERROR | RESPONSE, MsgType.ERROR | RESPONSE, MsgType.PING | RESPONSE]);
    assert.match(r[1]!.text, /expected 16/);
    assert.match(r[2]!.text, /unknown feature group 9/);
    assert.match(r[3]!.text, /unknown message type/);
    // A client with the wrong token cannot connect through the API either.
    await assert.rejects(EmbeddingClient.connect({ servers: cl.endpoints(), token: 'nope' }), /authentication failed|closed/);
    // The good client, connected all along, still works and sees the same rows.
    assert.deepEqual(await good.lookup(1, ids(50)), before);
    const st = await good.stats();
    assert.ok(st.shards[0]!.server.rejectedConnections >= 6);
    assert.equal(MAGIC, 0x4d455441);
  } finally {
    good.close();
    await cl.stop();
  }
});

async function trainSome(c: EmbeddingClient, steps: number, salt: number): Promise<void> {
  for (let s = 0; s < steps; s++) {
    const a = ids(400).filter((_, i) => (i * 7 + s + salt) % 5 !== 0);
    a.push(a[0]!, a[1]!); // duplicates within a batch
    await c.pushGrads(1, a, Float32Array.from({ length: a.length * 8 }, (_, k) => Math.sin(k * 0.37 + s + salt)), { advanceStep: false });
    const b = ids(300, 11);
    await c.pushGrads(2, b, Float32Array.from({ length: b.length * 3 }, (_, k) => Math.cos(k * 0.11 + s)));
  }
}

test('client API: dedup, order, pipelining and stats across 3 servers', async () => {
  const cl = await launchEmbeddingServers({ numShards: 3, config: CONFIG });
  const c = await cl.connect({ wireDtype: 'float32' });
  try {
    const q = [5n, 9n, 5n, 1000000007n, (1n << 55n) + 9n, 9n];
    const rows = await c.lookup(1, q);
    assert.deepEqual(rows.subarray(0, 8), rows.subarray(16, 24));
    assert.deepEqual(rows.subarray(8, 16), rows.subarray(40, 48));
    // Many requests in flight at once give the same answers as one at a time.
    const all = ids(2000);
    const one = await c.lookup(1, all);
    const parts = await Promise.all(Array.from({ length: 10 }, (_, k) => c.lookup(1, all.slice(k * 200, (k + 1) * 200))));
    parts.forEach((p, k) => assert.deepEqual(p, one.subarray(k * 200 * 8, (k + 1) * 200 * 8)));
    const st = await c.stats();
    assert.equal(st.shards.length, 3);
    assert.equal(st.shards.reduce((a, s) => a + s.groups[0]!.rows, 0), 2000 + 4);
    assert.ok(st.shards.every((s) => s.groups[0]!.rows > 500), 'rows spread over every server');
    assert.ok(Math.abs(st.addressableParams / (2 ** 56 * 11) - 1) < 1e-12);
    // CPU accounting: the store's share is part of the process's CPU time; context switches are counted.
    for (const sh of st.shards) {
      assert.ok(sh.server.storeCpuMs >= 0 && sh.server.storeCpuMs <= sh.cpuUserMs + sh.cpuSystemMs, `store CPU ${sh.server.storeCpuMs} ms within the process's ${sh.cpuUserMs + sh.cpuSystemMs} ms`);
      assert.ok(Number.isInteger(sh.voluntaryContextSwitches) && sh.voluntaryContextSwitches! > 0, 'a server that waited for requests slept');
    }
    assert.ok(st.shards.some((sh) => sh.server.storeCpuMs > 0), 'lookups of 2000 ids take measurable store time');
    // bf16 on the wire: values are the bf16 roundings of the float32 ones.
    const c16 = await cl.connect({ wireDtype: 'bfloat16' });
    const r16 = await c16.lookup(1, q, { readOnly: true });
    for (let i = 0; i < r16.length; i++) assert.ok(Math.abs(r16[i]! - rows[i]!) <= Math.abs(rows[i]!) * 2 ** -8);
    c16.close();
    // Pushing more ids than fit in one frame splits the request transparently.
    const many = ids(40000, 3);
    const res = await c.pushGrads(1, many, new Float32Array(many.length * 8).fill(0.001));
    assert.equal(res.applied, many.length);
  } finally {
    c.close();
    await cl.stop();
  }
});

test('re-shard 2 -> 3 servers keeps every row and its optimizer state exactly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-reshard-'));
  let two: EmbeddingCluster | undefined, three: EmbeddingCluster | undefined;
  try {
    two = await launchEmbeddingServers({ numShards: 2, config: CONFIG });
    const c2 = await two.connect({ wireDtype: 'float32' });
    await trainSome(c2, 4, 0);
    const manifests = await c2.dump(dir);
    assert.equal(manifests.length, 2);
    const st2 = await c2.stats();
    three = await launchEmbeddingServers({ numShards: 3, config: CONFIG, loadDir: dir });
    const c3 = await three.connect({ wireDtype: 'float32' });
    const st3 = await c3.stats();
    for (const g of [0, 1]) {
      const rows2 = st2.shards.reduce((a, s) => a + s.groups[g]!.rows, 0);
      assert.equal(st3.shards.reduce((a, s) => a + s.groups[g]!.rows, 0), rows2);
    }
    assert.equal(st3.shards[0]!.step, st2.shards[0]!.step);
    const q1 = ids(400), q2 = ids(300, 11);
    assert.deepEqual(await c3.lookup(1, q1, { readOnly: true }), await c2.lookup(1, q1, { readOnly: true }));
    assert.deepEqual(await c3.lookup(2, q2, { readOnly: true }), await c2.lookup(2, q2, { readOnly: true }));
    // Same further training on both tables gives the same rows: Adam/Adagrad state and per-row steps moved too.
    await trainSome(c2, 2, 5);
    await trainSome(c3, 2, 5);
    assert.deepEqual(await c3.lookup(1, q1, { readOnly: true }), await c2.lookup(1, q1, { readOnly: true }));
    assert.deepEqual(await c3.lookup(2, q2, { readOnly: true }), await c2.lookup(2, q2, { readOnly: true }));
    // Live load on a running table (3 -> 3 from the old 2-shard dump) works through the API too.
    const lr = await c3.load(dir);
    assert.equal(lr.reduce((a, r) => a + r.rowsLoaded, 0), st2.shards.reduce((a, s) => a + s.groups[0]!.rows + s.groups[1]!.rows, 0));
    c2.close();
    c3.close();
  } finally {
    await two?.stop();
    await three?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a server killed with SIGKILL and restarted from its checkpoint serves the checkpointed values', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-kill-'));
  const cl = await launchEmbeddingServers({ numShards: 2, config: CONFIG });
  try {
    let c = await cl.connect({ wireDtype: 'float32' });
    await trainSome(c, 3, 1);
    await c.dump(dir);
    const q = ids(400);
    const saved = await c.lookup(1, q, { readOnly: true });
    await trainSome(c, 2, 9); // changes after the checkpoint are lost with the crash
    assert.notDeepEqual(await c.lookup(1, q, { readOnly: true }), saved);
    await cl.kill(0, 'SIGKILL');
    await assert.rejects(c.lookup(1, q), /closed|ECONNRESET|EPIPE/);
    c.close();
    await cl.restart(0, { loadDir: dir });
    // Shard 1 still holds post-checkpoint values; bring it back to the checkpoint through the API as well.
    c = await cl.connect({ wireDtype: 'float32' });
    const now = await c.lookup(1, q, { readOnly: true });
    const pairs = idsToPairs(1, q);
    let fromShard0 = 0;
    const { shardOf } = await import('../src/recsys/embedding-hash.js');
    for (let i = 0; i < q.length; i++) {
      if (shardOf(pairs[2 * i + 1]!, pairs[2 * i]!, 2) !== 0) continue;
      fromShard0++;
      assert.deepEqual(now.subarray(i * 8, i * 8 + 8), saved.subarray(i * 8, i * 8 + 8), `row ${i} served by the restarted shard`);
    }
    assert.ok(fromShard0 > 100);
    await c.load(dir);
    assert.deepEqual(await c.lookup(1, q, { readOnly: true }), saved);
    c.close();
  } finally {
    await cl.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a routed batch gives the same rows and updates as raw ids', async () => {
  const cl = await launchEmbeddingServers({ numShards: 2, config: CONFIG });
  const c = await cl.connect({ wireDtype: 'float32' });
  try {
    const q = ids(500).concat(ids(100));
    const rb = c.route(1, q);
    assert.deepEqual(await c.lookup(1, rb), await c.lookup(1, q));
    const g = Float32Array.from({ length: q.length * 8 }, (_, k) => Math.sin(k));
    const res = await c.pushGrads(1, rb, g);
    assert.equal(res.applied, 500);
    assert.throws(() => c.route(9, q), /unknown feature group/);
    await assert.rejects(c.lookup(2, rb), /routed for group 1/);
  } finally {
    c.close();
    await cl.stop();
  }
});
