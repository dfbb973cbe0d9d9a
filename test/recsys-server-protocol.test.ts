import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/core/dtype.js';
import { fmix64, idsToPairs, mixOut, pairToBigInt, shardOf } from '../src/recsys/embedding-hash.js';
import { routeIds } from '../src/recsys/embedding-client.js';
import {
  FrameReader, HEADER_BYTES, MAGIC, MsgType, PROTOCOL_VERSION, ProtocolError, RESPONSE,
  decodeIdRequest, decodeJson, decodeLookupResponse, decodePushResponse, decodeValues, encodeFrame, encodeIdRequest, encodeJsonFrame,
  encodeLookupResponse, encodePushResponse, encodeValues, readHeader, tokenMatches, writeHeader, type WireDType,
} from '../src/recsys/protocol.js';

const M64 = (1n << 64n) - 1n;
function fmixRef(k: bigint): bigint {
  k ^= k >> 33n; k = (k * 0xff51afd7ed558ccdn) & M64;
  k ^= k >> 33n; k = (k * 0xc4ceb9fe1a85ec53n) & M64;
  return k ^ (k >> 33n);
}

let seed = 12345;
const rnd = (): number => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed; };

test('fmix64 on uint32 pairs equals the 64-bit BigInt finalizer', () => {
  const cases: Array<[number, number]> = [[0, 0], [0xffffffff, 0xffffffff], [0, 1], [1, 0], [0x80000000, 0x7fffffff]];
  for (let i = 0; i < 20000; i++) cases.push([rnd(), rnd()]);
  for (const [hi, lo] of cases) {
    const r = fmixRef(pairToBigInt(hi, lo));
    const l = fmix64(hi, lo);
    assert.equal(BigInt(l), r & 0xffffffffn, `lo of fmix64(${hi}, ${lo})`);
    assert.equal(BigInt(mixOut.hi), r >> 32n, `hi of fmix64(${hi}, ${lo})`);
  }
});

test('idsToPairs: bigint, number and BigUint64Array inputs agree and carry the group prefix', () => {
  const raw = [0n, 1n, 123456789012345n, (1n << 56n) - 1n, 0xabcdef12345678n];
  const a = idsToPairs(7, raw);
  const b = idsToPairs(7, BigUint64Array.from(raw.map((x) => x | (0xffn << 56n)))); // foreign prefix bits are replaced
  const c = idsToPairs(7, raw.slice(0, 3).map(Number));
  assert.deepEqual(a, b);
  assert.deepEqual(a.subarray(0, 6), c);
  for (let i = 0; i < raw.length; i++) {
    assert.equal(pairToBigInt(a[2 * i + 1]!, a[2 * i]!), (7n << 56n) | raw[i]!);
  }
  assert.throws(() => idsToPairs(0, [-1]), /not a non-negative safe integer/);
  assert.throws(() => idsToPairs(0, [2 ** 60]), /safe integer/);
});

test('header round trip and rejection of bad magic, version and length', () => {
  const b = new Uint8Array(HEADER_BYTES);
  writeHeader(b, MsgType.PUSH, 0xfeedbeef, 1234);
  assert.deepEqual(readHeader(b, 1234), { type: MsgType.PUSH, requestId: 0xfeedbeef, length: 1234, flags: 0 });
  assert.throws(() => readHeader(b, 1233), ProtocolError);
  const bad = Uint8Array.from(b); bad[0] ^= 1;
  assert.throws(() => readHeader(bad, 1 << 20), /bad magic/);
  const v = Uint8Array.from(b); v[4] = PROTOCOL_VERSION + 1;
  assert.throws(() => readHeader(v, 1 << 20), /version/);
  assert.equal(new DataView(b.buffer).getUint32(0, true), MAGIC);
});

test('FrameReader reassembles frames split at any byte and several frames per chunk', () => {
  const frames = [encodeFrame(MsgType.PING, 1), encodeJsonFrame(MsgType.STATS, 2, { a: [1, 2, 3] }), encodeFrame(MsgType.AUTH, 3, Buffer.from('x'.repeat(300)))];
  const all = Buffer.concat(frames);
  const bodies = frames.map((f) => Buffer.from(f.subarray(HEADER_BYTES)).toString('latin1'));
  // reuse (the server's reader): one payload buffer, valid while onFrame runs; the same bytes arrive.
  for (const reuse of [false, true]) {
    for (const step of [1, 3, 7, 16, 17, 100, all.length]) {
      const r = new FrameReader(1 << 20, reuse);
      const got: Array<[number, number, number]> = [];
      for (let i = 0; i < all.length; i += step) {
        r.push(all.subarray(i, i + step), (h, p) => {
          got.push([h.type, h.requestId, p.byteLength]);
          assert.equal(p.byteOffset % 8, 0);
          assert.equal(Buffer.from(p).toString('latin1'), bodies[h.requestId - 1], `payload of frame ${h.requestId}`);
        });
      }
      assert.deepEqual(got, [[MsgType.PING, 1, 0], [MsgType.STATS, 2, 13], [MsgType.AUTH, 3, 300]]);
    }
  }
  const r = new FrameReader(10);
  assert.throws(() => r.push(frames[2]!, () => undefined), /exceeds the limit/);
});

test('lookup and push messages round-trip in every wire dtype; bad lengths are rejected', () => {
  const ids = idsToPairs(3, [5n, 99n, 1n << 50n, 7n]);
  const dim = 5;
  const grads = Float32Array.from({ length: 4 * dim }, (_, i) => (i - 7) * 0.37);
  for (const dt of ['float32', 'float16', 'bfloat16'] as WireDType[]) {
    const lf = encodeIdRequest(MsgType.LOOKUP, 9, 3, dt, 1, ids, 1, 3);
    const lr = new FrameReader(1 << 20);
    lr.push(lf, (h, p) => {
      assert.equal(h.type, MsgType.LOOKUP);
      const q = decodeIdRequest(p, () => dim, false);
      assert.deepEqual([q.group, q.dtype, q.flags, q.count], [3, dt, 1, 3]);
      assert.deepEqual(q.ids, ids.subarray(2, 8));
    });
    const pf = encodeIdRequest(MsgType.PUSH, 10, 3, dt, 0, ids, 0, 4, { data: grads, dim });
    new FrameReader(1 << 20).push(pf, (_h, p) => {
      const q = decodeIdRequest(p, () => dim, true);
      assert.equal(q.count, 4);
      const back = new Float32Array(4 * dim);
      decodeValues(q.dtype, q.values, 4 * dim, back);
      for (let i = 0; i < back.length; i++) {
        const want = dt === 'float32' ? grads[i]! : dt === 'bfloat16' ? bf16ToF32(f32ToBf16(grads[i]!)) : f16ToF32(f32ToF16(grads[i]!));
        assert.equal(back[i], Math.fround(want));
      }
      // A push whose gradient block does not match count * dim is refused.
      assert.throws(() => decodeIdRequest(p, () => dim + 1, true), /expected/);
      assert.throws(() => decodeIdRequest(p.subarray(0, p.byteLength - 2), () => dim, true), /expected/);
    });
    const rows = Float32Array.from({ length: 3 * dim }, (_, i) => Math.sin(i));
    new FrameReader(1 << 20).push(encodeLookupResponse(11, 3, dt, rows, 3, dim), (h, p) => {
      assert.equal(h.type, MsgType.LOOKUP | RESPONSE);
      const r = decodeLookupResponse(p);
      assert.deepEqual([r.group, r.dtype, r.count, r.dim], [3, dt, 3, dim]);
      const back = new Float32Array(3 * dim);
      decodeValues(r.dtype, r.values, 3 * dim, back);
      if (dt === 'float32') assert.deepEqual(back, rows);
    });
  }
  assert.throws(() => decodeIdRequest(new Uint8Array(4), () => 1, false), /shorter/);
  const badDtype = new Uint8Array(8); badDtype[2] = 9;
  assert.throws(() => decodeIdRequest(badDtype, () => 1, false), /wire dtype/);
  new FrameReader(64).push(encodePushResponse(4, { applied: 7, dropped: 2, step: 2 ** 40 }), (_h, p) => {
    assert.deepEqual(decodePushResponse(p), { applied: 7, dropped: 2, step: 2 ** 40 });
  });
  assert.throws(() => decodeJson(Buffer.from('{nope'), 'x'), ProtocolError);
});

test('bulk bf16/f16 codecs equal the scalar helpers of core/dtype', () => {
  const vals = [0, -0, 1, -1, 65504, 65520, 1e-8, -3e-5, 6.1e-5, 1e38, -1e38, Infinity, -Infinity, NaN, 3.14159, 1 + 2 ** -8, 1 + 3 * 2 ** -9];
  for (let i = 0; i < 5000; i++) vals.push((rnd() / 2 ** 32 - 0.5) * 2 ** ((rnd() % 60) - 30));
  const src = Float32Array.from(vals);
  for (const dt of ['bfloat16', 'float16'] as const) {
    const bytes = new Uint8Array(2 * src.length);
    encodeValues(dt, src, src.length, bytes);
    const h = new Uint16Array(bytes.buffer);
    const back = new Float32Array(src.length);
    decodeValues(dt, bytes, src.length, back);
    for (let i = 0; i < src.length; i++) {
      const want = dt === 'bfloat16' ? f32ToBf16(src[i]!) : f32ToF16(src[i]!);
      assert.equal(h[i], want, `${dt} of ${src[i]}`);
      const wf = dt === 'bfloat16' ? bf16ToF32(want) : f16ToF32(want);
      assert.ok(Object.is(back[i], Math.fround(wf)) || (Number.isNaN(back[i]) && Number.isNaN(wf)), `${dt} decode of ${want}`);
    }
  }
});

test('token comparison', () => {
  assert.ok(tokenMatches(Buffer.from('s3cret'), 's3cret'));
  assert.ok(!tokenMatches(Buffer.from('s3cre'), 's3cret'));
  assert.ok(!tokenMatches(Buffer.from('s3cret!'), 's3cret'));
  assert.ok(!tokenMatches(Buffer.from(''), ''));
});

test('routeIds deduplicates, routes by hash and inverts', () => {
  const raw: bigint[] = [];
  for (let i = 0; i < 3000; i++) raw.push(BigInt(rnd() % 700));
  const pairs = idsToPairs(2, raw);
  const r = routeIds(pairs, 3);
  assert.equal(r.uShard.length, new Set(raw).size);
  assert.equal(r.shardCount.reduce((a, b) => a + b, 0), r.uShard.length);
  for (let i = 0; i < raw.length; i++) {
    const u = r.inverse[i]!, s = r.uShard[u]!, p = r.uPos[u]!;
    assert.equal(s, shardOf(pairs[2 * i + 1]!, pairs[2 * i]!, 3));
    assert.equal(r.shardIds[s]![2 * p], pairs[2 * i]);
    assert.equal(r.shardIds[s]![2 * p + 1], pairs[2 * i + 1]);
  }
  for (let s = 0; s < 3; s++) assert.ok(r.shardCount[s]! > 150, 'every shard gets a fair share');
});
