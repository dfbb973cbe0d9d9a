import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IndexedDataset, IndexedDatasetWriter, optimalTokenDType, writeIndexedDataset, type IndexedDType,
} from '../src/data/index.js';

function tmp(): string { return mkdtempSync(join(tmpdir(), 'athanor-data-idx-')); }

const u64 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff, 0, 0, 0, 0];
const i32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
const MAGIC = [0x4d, 0x4d, 0x49, 0x44, 0x49, 0x44, 0x58, 0x00, 0x00]; // "MMIDIDX\0\0"

// Hand-made per the Megatron spec: two documents "Hi"+EOS and "!"+EOS, EOS = 256, uint16.
const FIXTURE_DOCS = [[0x48, 0x69, 256], [0x21, 256]];
const FIXTURE_IDX_U16 = Uint8Array.from([
  ...MAGIC,
  ...u64(1), // version
  8, // dtype code: uint16
  ...u64(2), // sequence count
  ...u64(3), // document count (boundaries)
  ...i32(3), ...i32(2), // sequence lengths
  ...u64(0), ...u64(6), // sequence pointers (bytes)
  ...u64(0), ...u64(1), ...u64(2), // document indices
]);
const FIXTURE_BIN_U16 = Uint8Array.from([0x48, 0x00, 0x69, 0x00, 0x00, 0x01, 0x21, 0x00, 0x00, 0x01]);
// Same documents as int32 (code 4): pointers advance 4 bytes a token.
const FIXTURE_IDX_I32 = Uint8Array.from([
  ...MAGIC, ...u64(1), 4, ...u64(2), ...u64(3),
  ...i32(3), ...i32(2), ...u64(0), ...u64(12), ...u64(0), ...u64(1), ...u64(2),
]);
const FIXTURE_BIN_I32 = Uint8Array.from([
  0x48, 0, 0, 0, 0x69, 0, 0, 0, 0x00, 0x01, 0, 0, 0x21, 0, 0, 0, 0x00, 0x01, 0, 0,
]);

for (const [dtype, idx, bin] of [['uint16', FIXTURE_IDX_U16, FIXTURE_BIN_U16], ['int32', FIXTURE_IDX_I32, FIXTURE_BIN_I32]] as const) {
  test(`hand-made ${dtype} fixture: reader reads it, writer reproduces it byte for byte`, () => {
    const dir = tmp();
    try {
      assert.equal(idx.byteLength, 82);
      writeFileSync(join(dir, 'fx.idx'), idx);
      writeFileSync(join(dir, 'fx.bin'), bin);
      const ds = IndexedDataset.open(join(dir, 'fx'));
      assert.equal(ds.dtype, dtype);
      assert.equal(ds.sequenceCount, 2);
      assert.equal(ds.documentCount, 2);
      assert.equal(ds.numTokens, 5);
      assert.equal(ds.contiguous, true);
      assert.deepEqual([...ds.sequenceLengths], [3, 2]);
      assert.deepEqual([...ds.sequencePointers], dtype === 'uint16' ? [0, 6] : [0, 12]);
      assert.deepEqual([...ds.documentIndices], [0, 1, 2]);
      assert.deepEqual([...ds.getSequence(0)], FIXTURE_DOCS[0]);
      assert.deepEqual([...ds.getSequence(1)], FIXTURE_DOCS[1]);
      assert.deepEqual([...ds.getSequence(0, 1, 2)], [0x69, 256]);
      assert.deepEqual([...ds.readTokens(1, 4)], [0x69, 256, 0x21, 256]);
      assert.deepEqual(ds.documentRange(1), [1, 2]);
      ds.close();
      // Open via the .bin name too.
      IndexedDataset.open(join(dir, 'fx.bin')).close();

      const stats = writeIndexedDataset(join(dir, 'out'), FIXTURE_DOCS, dtype);
      assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'out.idx'))), idx);
      assert.deepEqual(new Uint8Array(readFileSync(join(dir, 'out.bin'))), bin);
      assert.equal(stats.tokens, 5);
      assert.equal(stats.documents, 2);
      assert.equal(stats.idxBytes, 82);
      // No temporary files left behind.
      assert.deepEqual(readdirSync(dir).sort(), ['fx.bin', 'fx.idx', 'out.bin', 'out.idx']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('optimal dtype follows Megatron (uint16 below 65500)', () => {
  assert.equal(optimalTokenDType(257), 'uint16');
  assert.equal(optimalTokenDType(65499), 'uint16');
  assert.equal(optimalTokenDType(65500), 'int32');
  assert.equal(optimalTokenDType(151936), 'int32');
});

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
}

for (const [dtype, vocab] of [['uint16', 65500 - 1], ['int32', 2_000_000_000]] as [IndexedDType, number][]) {
  test(`round trip ${dtype}: random documents, empty ones included, small write buffer`, () => {
    const dir = tmp();
    try {
      const rnd = lcg(7);
      const docs: number[][] = [];
      for (let d = 0; d < 200; d++) {
        const n = d % 17 === 0 ? 0 : Math.floor(rnd() * 300);
        docs.push(Array.from({ length: n }, () => Math.floor(rnd() * vocab)));
      }
      docs[3] = [0, vocab - 1];
      const w = new IndexedDatasetWriter(join(dir, 'rt'), { dtype, bufferBytes: 64 });
      for (const d of docs) w.addDocument(d);
      const st = w.finish();
      const total = docs.reduce((a, d) => a + d.length, 0);
      assert.equal(st.tokens, total);
      const ds = IndexedDataset.open(join(dir, 'rt'));
      assert.equal(ds.dtype, dtype);
      assert.equal(ds.documentCount, 200);
      assert.equal(ds.numTokens, total);
      for (let i = 0; i < docs.length; i++) assert.deepEqual([...ds.getSequence(i)], docs[i], `doc ${i}`);
      const flat = docs.flat();
      assert.deepEqual([...ds.readTokens(0, flat.length)], flat);
      assert.deepEqual([...ds.readTokens(1234, 77)], flat.slice(1234, 1234 + 77));
      ds.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('documents made of several sequences, and pieces appended to one sequence', () => {
  const dir = tmp();
  try {
    const w = new IndexedDatasetWriter(join(dir, 'ms'), { dtype: 'uint16' });
    w.append([1, 2]); w.append([3]); w.endSequence();
    w.append([4]); w.endSequence();
    w.endDocument();
    w.addDocument([5, 6]);
    w.finish();
    const ds = IndexedDataset.open(join(dir, 'ms'));
    assert.deepEqual([...ds.sequenceLengths], [3, 1, 2]);
    assert.deepEqual([...ds.documentIndices], [0, 2, 3]);
    assert.equal(ds.documentCount, 2);
    assert.deepEqual(ds.documentRange(0), [0, 2]);
    ds.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('non-contiguous pointers are followed when reading the token stream', () => {
  const dir = tmp();
  try {
    // Sequence 0 stored after sequence 1 in the .bin.
    writeFileSync(join(dir, 'nc.idx'), Uint8Array.from([
      ...MAGIC, ...u64(1), 8, ...u64(2), ...u64(3),
      ...i32(2), ...i32(3), ...u64(6), ...u64(0), ...u64(0), ...u64(1), ...u64(2),
    ]));
    writeFileSync(join(dir, 'nc.bin'), Uint8Array.from([3, 0, 4, 0, 5, 0, 1, 0, 2, 0]));
    const ds = IndexedDataset.open(join(dir, 'nc'));
    assert.equal(ds.contiguous, false);
    assert.deepEqual([...ds.readTokens(0, 5)], [1, 2, 3, 4, 5]);
    assert.deepEqual([...ds.readTokens(1, 3)], [2, 3, 4]);
    ds.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reader validation names the file and the field', () => {
  const dir = tmp();
  const put = (idx: number[] | Uint8Array, bin: Uint8Array = FIXTURE_BIN_U16): string => {
    writeFileSync(join(dir, 'v.idx'), Uint8Array.from(idx));
    writeFileSync(join(dir, 'v.bin'), bin);
    return join(dir, 'v');
  };
  const good = [...FIXTURE_IDX_U16];
  try {
    const bad = (mut: (b: number[]) => void, re: RegExp, bin?: Uint8Array): void => {
      const b = [...good];
      mut(b);
      assert.throws(() => IndexedDataset.open(put(b, bin)), re);
    };
    bad((b) => { b[0] = 0x4e; }, /v\.idx: field 'magic'/);
    bad((b) => { b[9] = 2; }, /v\.idx: field 'version' is 2/);
    bad((b) => { b[17] = 9; }, /v\.idx: field 'dtype' has unknown code 9/);
    bad((b) => { b[18] = 3; }, /v\.idx: file is 82 bytes but fields 'sequence_count'=3/);
    bad((b) => { b.length = 20; }, /v\.idx: file is 20 bytes, shorter than the 34-byte/);
    bad(() => undefined, /v\.idx: field 'sequence_pointers\[1\]' = 6 with length 2 ends at byte 10, past the end of .*v\.bin \(8 bytes\)/, FIXTURE_BIN_U16.subarray(0, 8));
    bad((b) => { b[34] = 0xff; b[35] = 0xff; b[36] = 0xff; b[37] = 0xff; }, /field 'sequence_lengths\[0\]' is -1/);
    bad((b) => { b[74] = 9; }, /field 'document_indices\[2\]' is 9, beyond sequence_count 2/);
    assert.throws(() => IndexedDataset.open(join(dir, 'missing')), /missing\.idx: index file not found/);
    writeFileSync(join(dir, 'nobin.idx'), FIXTURE_IDX_U16);
    assert.throws(() => IndexedDataset.open(join(dir, 'nobin')), /nobin\.bin: data file not found/);
    const ds = IndexedDataset.open(put(good));
    assert.throws(() => ds.readTokens(3, 3), /token window \[3, 6\) outside \[0, 5\)/);
    assert.throws(() => ds.getSequence(2), /sequence 2 out of range/);
    ds.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('writer rejects tokens outside the dtype or maxToken and leaves no files on abort', () => {
  const dir = tmp();
  try {
    const w = new IndexedDatasetWriter(join(dir, 'r'), { dtype: 'uint16' });
    assert.throws(() => w.addDocument([1, 65536]), /token 65536 at position 1 of sequence 0 is outside \[0, 65535\] \(dtype uint16\)/);
    w.abort();
    const w2 = new IndexedDatasetWriter(join(dir, 'r'), { dtype: 'uint16', maxToken: 256 });
    assert.throws(() => w2.addDocument([257]), /outside \[0, 256\]/);
    const w3 = new IndexedDatasetWriter(join(dir, 'r2'), { dtype: 'int32' });
    assert.throws(() => w3.addDocument([1.5]), /token 1.5/);
    w3.abort();
    w2.abort();
    assert.ok(!existsSync(join(dir, 'r.bin')) && !existsSync(join(dir, 'r.idx')));
    assert.deepEqual(readdirSync(dir), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('other dtypes (uint8, int16, int64) round trip', () => {
  const dir = tmp();
  try {
    for (const dtype of ['uint8', 'int8', 'int16', 'int64', 'float32', 'float64'] as IndexedDType[]) {
      const docs = [[1, 2, 3], [], [100, 0]];
      writeIndexedDataset(join(dir, dtype), docs, dtype);
      const ds = IndexedDataset.open(join(dir, dtype));
      assert.equal(ds.dtype, dtype);
      assert.deepEqual([...ds.readTokens(0, 5)], [1, 2, 3, 100, 0], dtype);
      ds.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
