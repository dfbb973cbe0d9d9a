// Criteo TSV reader on a hand-written fixture; the synthetic generator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { countLines, hashCategorical, parseCriteoLine, readCriteoFile } from '../src/recsys/criteo.js';
import { generateCriteo, generateCriteoLines } from '../src/recsys/criteo-generate.js';

const T = '\t';
const cats = (xs: string[]): string => xs.join(T);
const C26 = Array.from({ length: 26 }, (_, i) => (i * 0x1111 + 0x0a0b0c0d).toString(16).padStart(8, '0'));
const line = (label: string, ints: string[], c: string[]): string => [label, ...ints, cats(c)].join(T);
const ints13 = (v: (i: number) => string): string[] => Array.from({ length: 13 }, (_, i) => v(i));

const FIXTURE = [
  line('1', ints13((i) => String(i)), C26),
  line('0', ints13((i) => (i % 2 ? '' : '-2')), C26.map((c, i) => (i % 3 === 0 ? '' : c))), // missing and negative values
  '',                                                                                       // empty lines are skipped
  line('0', ints13(() => '7'), C26.map((c) => c.toUpperCase())),                            // hex is case-insensitive
  line('1', ints13(() => '0'), C26),
].join('\n') + '\n';

function groupAndRaw(x: bigint): { group: number; raw: bigint } {
  return { group: Number(x >> 56n), raw: x & ((1n << 56n) - 1n) };
}

test('Criteo reader: transforms, missing values, group prefixes, sharding and skipping', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'criteo-'));
  try {
    const p = join(dir, 'fixture.tsv');
    writeFileSync(p, FIXTURE);
    assert.equal(countLines(p), 5);
    const [b] = await readCriteoFile(p, { batchSize: 4 });
    assert.ok(b);
    assert.equal(b.size, 4);
    assert.deepEqual([...b.labels], [1, 0, 0, 1]);
    for (let j = 0; j < 13; j++) assert.ok(Math.abs(b.dense[j]! - Math.log1p(j)) < 1e-6);
    for (let j = 0; j < 13; j++) assert.equal(b.dense[13 + j], 0, 'missing and negative integers become 0');
    assert.ok(Math.abs(b.dense[2 * 13]! - Math.log1p(7)) < 1e-6);
    assert.equal(b.sparse.length, 26);
    for (let f = 0; f < 26; f++) {
      const s = b.sparse[f]!;
      for (let r = 0; r < 4; r++) assert.equal(groupAndRaw(s[r]!).group, f, 'field index is the group prefix');
      const h = hashCategorical(parseInt(C26[f]!, 16));
      assert.equal(groupAndRaw(s[0]!).raw, (BigInt(h.hi) << 32n) | BigInt(h.lo));
      assert.equal(s[2], s[0], 'upper- and lower-case hex hash alike');
      assert.equal(groupAndRaw(s[1]!).raw, f % 3 === 0 ? 0n : groupAndRaw(s[0]!).raw, 'missing categorical = raw id 0');
    }
    // Two trainers read disjoint halves; a skip resumes inside a shard.
    const r0 = await readCriteoFile(p, { batchSize: 1, rank: 0, worldSize: 2 });
    const r1 = await readCriteoFile(p, { batchSize: 1, rank: 1, worldSize: 2 });
    assert.deepEqual(r0.map((x) => x.labels[0]), [1, 0]);
    assert.deepEqual(r1.map((x) => x.labels[0]), [0, 1]);
    const sk = await readCriteoFile(p, { batchSize: 1, rank: 0, worldSize: 2, skip: 1 });
    assert.equal(sk.length, 1);
    assert.deepEqual(sk[0]!.dense, r0[1]!.dense);
    // Short final batch only on request.
    assert.equal((await readCriteoFile(p, { batchSize: 3 })).length, 1);
    assert.equal((await readCriteoFile(p, { batchSize: 3, keepLast: true })).at(-1)!.size, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Criteo reader: malformed lines fail with file:line', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'criteo-'));
  try {
    const cases: Array<[string, RegExp]> = [
      [line('1', ints13(() => '1'), C26.slice(0, 25)), /:3: expected 40 tab-separated columns/],
      [line('2', ints13(() => '1'), C26), /:3: label must be 0 or 1/],
      [line('0', ints13((i) => (i === 4 ? '1.5' : '1')), C26), /:3: integer feature I5 is '1.5'/],
      [line('0', ints13(() => '1'), C26.map((c, i) => (i === 7 ? 'xyz' : c))), /:3: categorical feature C8 is 'xyz'/],
    ];
    for (const [bad, re] of cases) {
      const p = join(dir, 'bad.tsv');
      writeFileSync(p, [line('1', ints13(() => '1'), C26), line('0', ints13(() => ''), C26), bad, line('1', ints13(() => '1'), C26)].join('\n'));
      await assert.rejects(readCriteoFile(p, { batchSize: 2 }), (e: Error) => {
        assert.ok(e.message.startsWith(`${p}:3:`), e.message);
        assert.match(e.message, re);
        return true;
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('generator: deterministic, readable, and its ground truth beats chance', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'criteo-gen-'));
  try {
    const a = join(dir, 'a.tsv'), b = join(dir, 'b.tsv');
    const ra = generateCriteo(a, { rows: 3000, seed: 1, vocab: 200 });
    const rb = generateCriteo(b, { rows: 3000, seed: 1, vocab: 200 });
    assert.equal(readFileSync(a, 'utf8'), readFileSync(b, 'utf8'));
    assert.deepEqual(ra, rb);
    assert.ok(ra.groundTruthAUC > 0.75 && ra.groundTruthAUC < 1, `ground-truth AUC ${ra.groundTruthAUC}`);
    assert.ok(ra.positives > 300 && ra.positives < 2700);
    const batches = await readCriteoFile(a, { batchSize: 500 });
    assert.equal(batches.length, 6);
    // Zipf: the most frequent value of field 0 is far more common than uniform.
    const counts = new Map<bigint, number>();
    for (const x of batches.flatMap((bt) => [...bt.sparse[0]!])) counts.set(x, (counts.get(x) ?? 0) + 1);
    assert.ok(Math.max(...counts.values()) > 3000 / 200 * 10);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Criteo reader: the one-pass line parser writes exactly what parseCriteoLine writes, and declines what it cannot take', async () => {
  const { parseCriteoLine, parseCriteoLineFast, CRITEO_FORMAT: fmt } = await import('../src/recsys/criteo.js');
  let x = 7;
  const rnd = (n: number): number => { x = (Math.imul(x, 1664525) + 1013904223) >>> 0; return x % n; };
  const ints = ['', '0', '-0', '5', '-3', '007', '123456789012345', '1234567890123456', '9'.repeat(20), '-', '+4', '1.5', '1e3'];
  const hexes = ['', '0', 'a', 'F', 'deadbeef', 'DEADBEEF', '0a0B0c0D', '123456789', 'xyz', '-1'];
  const lines: string[] = [];
  for (let k = 0; k < 400; k++) {
    const label = ['0', '1', '1', '0', '2', ''][rnd(6)]!;
    const is = Array.from({ length: 13 }, () => ints[rnd(k < 200 ? 6 : ints.length)]!);
    const cs = Array.from({ length: 26 }, () => hexes[rnd(k < 200 ? 7 : hexes.length)]!);
    if (k % 50 === 49) cs.pop(); // a column short
    if (k % 50 === 48) cs.push('ab'); // a column too many
    lines.push([label, ...is, ...cs].join('\t'));
  }
  let fast = 0;
  for (const l of lines) {
    const mk = (): { d: Float32Array; w: Uint32Array[]; y: Float32Array } => ({ d: new Float32Array(13), w: Array.from({ length: 26 }, () => new Uint32Array(2)), y: new Float32Array(1) });
    const a = mk(), b = mk();
    let err: string | null = null;
    try { parseCriteoLine(l, 'x', fmt, a.d, a.w, a.y, 0); } catch (e) { err = (e as Error).message; }
    const ok = parseCriteoLineFast(l, fmt, b.d, b.w, b.y, 0);
    if (err !== null) { assert.equal(ok, false, `fast parser took a line the reference refuses (${err}): ${l}`); continue; }
    if (!ok) continue; // declined: the reader falls back to the reference
    fast++;
    assert.deepEqual([...b.y], [...a.y], l);
    assert.deepEqual(new Uint32Array(b.d.buffer), new Uint32Array(a.d.buffer), l);
    assert.deepEqual(b.w, a.w, l);
  }
  assert.ok(fast > 100, `the fast path took ${fast} lines`);
});

test('Criteo reader over 1 MiB chunk boundaries (CRLF, empty lines, no final newline): shards, skip, limit and keepLast equal a line-by-line parse', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'criteo-chunks-'));
  try {
    const { lines } = generateCriteoLines({ rows: 16000, seed: 5, vocab: 1000 });
    // Every 7th line ends in CRLF, every 50th is followed by an empty line; no newline at the end.
    const text = lines.map((l, i) => l + (i % 7 === 0 ? '\r' : '') + (i % 50 === 0 ? '\n' : '')).join('\n');
    assert.ok(text.length > 2.5 * (1 << 20), 'spans several read chunks');
    const p = join(dir, 'big.tsv');
    writeFileSync(p, text);
    const fmt = { numDense: 13, numSparse: 26 };
    const expect = (rank: number, world: number, skip: number, limit: number, B: number, keepLast: boolean): { labels: number[]; dense: number[]; ids: bigint[] } => {
      const mine = lines.filter((_, i) => i % world === rank).slice(skip, skip + limit);
      const n = keepLast ? mine.length : mine.length - (mine.length % B);
      const dense = new Float32Array(n * 13), labels = new Float32Array(n), sparse = Array.from({ length: 26 }, () => new BigUint64Array(n));
      const words = sparse.map((x) => new Uint32Array(x.buffer));
      mine.slice(0, n).forEach((l, r) => parseCriteoLine(l, 'x', fmt, dense, words, labels, r));
      return { labels: Array.from(labels), dense: Array.from(dense), ids: sparse.flatMap((x) => Array.from(x)) };
    };
    for (const [rank, world, skip, limit, B, keepLast] of [[0, 1, 0, Infinity, 128, false], [1, 2, 3, 3001, 100, true], [2, 3, 0, 2000, 64, false], [0, 2, 10, Infinity, 1000, true], [1, 2, 0, Infinity, 7999, false]] as const) {
      const got = await readCriteoFile(p, { batchSize: B, rank, worldSize: world, skip, ...(Number.isFinite(limit) ? { limit } : {}), keepLast, format: fmt });
      const want = expect(rank, world, skip, Number.isFinite(limit) ? limit : Infinity, B, keepLast);
      assert.deepEqual(got.flatMap((b) => Array.from(b.labels)), want.labels, `labels rank ${rank}/${world}`);
      assert.deepEqual(got.flatMap((b) => Array.from(b.dense)), want.dense, `dense rank ${rank}/${world}`);
      const ids: bigint[] = [];
      for (let f = 0; f < 26; f++) for (const b of got) ids.push(...b.sparse[f]!);
      assert.deepEqual(ids, want.ids, `ids rank ${rank}/${world}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
