// The client's frame reader against protocol.ts's FrameReader: the same frames from any
// split of the byte stream; data payloads in fresh 8-aligned buffers; bad headers refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FRAME_SHM, FrameReader, MsgType, RESPONSE, allocFrame, encodeFrame, type FrameHeader } from '../src/recsys/protocol.js';
import { ReplyReader } from '../src/recsys/reply-reader.js';
import { Rng } from '../src/core/rng.js';

function stream(): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0; i < 40; i++) {
    if (i % 3 === 0) {
      const f = allocFrame(MsgType.LOOKUP | RESPONSE, i + 1, 8, FRAME_SHM);
      f.writeUInt32LE(1000 + i, 16); f.writeUInt32LE(0, 20);
      frames.push(f);
    } else frames.push(encodeFrame(MsgType.PUSH | RESPONSE, i + 1, Buffer.from(Array.from({ length: (i * 7) % 53 }, (_, j) => (i + j) & 255))));
  }
  return Buffer.concat(frames);
}

function collect(reader: { push(c: Buffer, f: (h: FrameHeader, p: Uint8Array) => void): void }, parts: Buffer[]): Array<{ h: FrameHeader; p: number[]; aligned: boolean }> {
  const out: Array<{ h: FrameHeader; p: number[]; aligned: boolean }> = [];
  for (const c of parts) reader.push(c, (h, p) => out.push({ h, p: Array.from(p), aligned: p.byteOffset % 8 === 0 }));
  return out;
}

test('ReplyReader yields FrameReader\'s frames for any split of the stream; data payloads are fresh and aligned', () => {
  const all = stream();
  const want = collect(new FrameReader(1 << 20), [all]);
  assert.equal(want.length, 40);
  const rng = new Rng(3);
  const splits: Buffer[][] = [[all], Array.from(all, (_, i) => all.subarray(i, i + 1))];
  for (let t = 0; t < 30; t++) {
    const parts: Buffer[] = [];
    for (let at = 0; at < all.length;) { const n = 1 + rng.int(60); parts.push(all.subarray(at, at + n)); at += n; }
    splits.push(parts);
  }
  for (const parts of splits) {
    const got = collect(new ReplyReader(1 << 20), parts);
    assert.deepEqual(got.map((g) => [g.h, g.p]), want.map((w) => [w.h, w.p]));
    for (const g of got) if ((g.h.flags & FRAME_SHM) === 0) assert.ok(g.aligned, `frame ${g.h.requestId}: data payload not 8-aligned`);
  }
});

test('ReplyReader refuses a bad magic and a payload over its limit', () => {
  const f = encodeFrame(MsgType.PUSH | RESPONSE, 1, Buffer.alloc(100));
  assert.throws(() => new ReplyReader(50).push(f, () => undefined), /exceeds the limit of 50/);
  const bad = Buffer.from(f); bad[0] = 0;
  assert.throws(() => new ReplyReader(1000).push(bad, () => undefined), /bad magic/);
});
