import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { TcpStore, TcpStoreServer, storeWire } from '../src/runtime/tcp-store.js';

const TOKEN = 'test-secret';

function frame(op: number, reqId: number, ...args: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([op]), u32(reqId), ...args]);
  return Buffer.concat([u32(body.length), body]);
}
function u32(v: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); return b; }
function str(s: string): Buffer { const b = Buffer.from(s); return Buffer.concat([u32(b.length), b]); }

/** Writes raw bytes; resolves with whatever the server sent back once it closes the connection. */
function rawExchange(port: number, chunks: Buffer[]): Promise<{ closed: boolean; reply: Buffer }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const got: Buffer[] = [];
    s.on('data', (c) => got.push(c));
    s.on('error', () => {});
    const t = setTimeout(() => { s.destroy(); resolve({ closed: false, reply: Buffer.concat(got) }); }, 5000);
    s.on('close', () => { clearTimeout(t); resolve({ closed: true, reply: Buffer.concat(got) }); });
    s.on('connect', () => { for (const c of chunks) s.write(c); });
  });
}

test('store: set/get/add/wait/check/delete, get blocks until set', async () => {
  const srv = await TcpStoreServer.start({ token: TOKEN });
  const a = await TcpStore.connect({ host: '127.0.0.1', port: srv.port, token: TOKEN });
  const b = await TcpStore.connect({ host: '127.0.0.1', port: srv.port, token: TOKEN });
  try {
    const pending = b.getString('late');
    await a.set('k', 'v');
    assert.equal(await b.getString('k'), 'v');
    await a.set('late', 'arrived');
    assert.equal(await pending, 'arrived');
    assert.equal(await a.add('n', 2), 2);
    assert.equal(await b.add('n', 3), 5);
    assert.equal(await a.check(['k', 'n']), true);
    assert.equal(await a.check(['k', 'nope']), false);
    const w = b.wait(['x', 'y']);
    await a.set('x', '1'); await a.set('y', new Uint8Array([0, 255]));
    await w;
    assert.deepEqual([...(await a.get('y'))], [0, 255]);
    assert.equal(await a.delete('k'), true);
    await assert.rejects(a.get('k', 200), /timed out after 200 ms waiting for key\(s\) k/);
    await Promise.all([a.barrier('bar', 2), b.barrier('bar', 2)]);
  } finally { a.close(); b.close(); await srv.close(); }
});

test('store: rejects unauthenticated, bad-token, oversized and malformed frames without crashing', async () => {
  const reasons: string[] = [];
  const srv = await TcpStoreServer.start({ token: TOKEN, maxFrameBytes: 1024, onReject: (r) => reasons.push(r) });
  const { Op } = storeWire;
  try {
    // 1. request before AUTH
    let r = await rawExchange(srv.port, [frame(Op.SET, 1, str('k'), str('v'))]);
    assert.ok(r.closed); assert.match(r.reply.toString(), /unauthenticated/);
    // 2. wrong token
    r = await rawExchange(srv.port, [frame(Op.AUTH, 1, str('wrong'))]);
    assert.ok(r.closed); assert.match(r.reply.toString(), /bad token/);
    // 3. huge frame before auth (length prefix alone is enough to reject)
    r = await rawExchange(srv.port, [u32(64 << 20)]);
    assert.ok(r.closed); assert.match(r.reply.toString(), /exceeds the limit/);
    // 4. oversized frame after auth
    r = await rawExchange(srv.port, [frame(Op.AUTH, 1, str(TOKEN)), frame(Op.SET, 2, str('k'), str('x'.repeat(2000)))]);
    assert.ok(r.closed); assert.match(r.reply.toString(), /exceeds the limit of 1024/);
    // 5. malformed: truncated SET, unknown op, trailing bytes, too-short frame, garbage
    for (const bad of [
      frame(Op.SET, 2, u32(100)),
      frame(99, 2),
      frame(Op.PING, 2, Buffer.from([1, 2, 3])),
      Buffer.concat([u32(2), Buffer.from([1, 2])]),
    ]) {
      r = await rawExchange(srv.port, [frame(Op.AUTH, 1, str(TOKEN)), bad]);
      assert.ok(r.closed, `closed after ${bad.toString('hex')}`);
      assert.match(r.reply.toString(), /malformed|shorter than a header/);
    }
    r = await rawExchange(srv.port, [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]);
    assert.ok(r.closed);
    assert.ok(reasons.length >= 9, reasons.join('; '));
    // The server is still healthy.
    const c = await TcpStore.connect({ host: '127.0.0.1', port: srv.port, token: TOKEN });
    await c.set('still', 'alive');
    assert.equal(await c.getString('still'), 'alive');
    await assert.rejects(TcpStore.connect({ host: '127.0.0.1', port: srv.port, token: 'nope', connectTimeoutMs: 500 }), /bad token/);
    c.close();
  } finally { await srv.close(); }
});
