import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IndexedDataset, expandInputs, globToRegExp, hashText, prepare, readDocuments, stripAnsiCodes,
  type PrepareMeta, type PrepareProgress,
} from '../src/data/index.js';

const EOS = 256;
const enc = new TextEncoder();
const byteTokenizer = { encode: (s: string) => enc.encode(s), eosId: EOS, vocabSize: 257 };
const dec = new TextDecoder();

function tmp(): string { return mkdtempSync(join(tmpdir(), 'athanor-data-prep-')); }

/** Documents of a prepared split, decoded, with the EOS check done. */
function docsOf(prefix: string): string[] {
  const ds = IndexedDataset.open(prefix);
  const out: string[] = [];
  for (let i = 0; i < ds.sequenceCount; i++) {
    const t = ds.getSequence(i);
    assert.equal(t[t.length - 1], EOS, `document ${i} ends with EOS`);
    assert.ok(!t.subarray(0, t.length - 1).includes(EOS), `EOS only at the end of document ${i}`);
    out.push(dec.decode(Uint8Array.from(t.subarray(0, t.length - 1))));
  }
  assert.deepEqual([...ds.documentIndices], Array.from({ length: ds.sequenceCount + 1 }, (_, i) => i));
  ds.close();
  return out;
}

async function collect(file: string, opts = {}): Promise<string[]> {
  const out: string[] = [];
  for await (const d of readDocuments(file, opts)) out.push(d);
  return out;
}

test('text documents: % lines (fortune files) or 2+ blank lines separate them, ANSI colours stripped', async () => {
  const dir = tmp();
  try {
    const f = join(dir, 'fortunes');
    writeFileSync(f, [
      '\ufeff床前明月光，', '疑是地上霜。', '%', // BOM dropped
      '\x1b[31m红色\x1b[0m文字', '', 'second paragraph, same document', '%',
      '%', // empty document skipped
      'after percent', '', '', '', 'after blank run\r', // CRLF tolerated
      '%',
    ].join('\n'));
    // auto: the file has `%` lines, so only they separate (fortunes keep blank runs inside).
    const percent = [
      '床前明月光，\n疑是地上霜。', '红色文字\n\nsecond paragraph, same document', 'after percent\n\n\n\nafter blank run',
    ];
    assert.deepEqual(await collect(f), percent);
    assert.deepEqual(await collect(f, { docSeparator: 'blank-lines' }), [
      '床前明月光，\n疑是地上霜。\n%\n红色文字\n\nsecond paragraph, same document\n%\n%\nafter percent', 'after blank run\n%',
    ]);
    // A file without `%` lines: runs of 2+ blank lines separate, single blank lines stay inside.
    const g = join(dir, 'plain.txt');
    writeFileSync(g, '\n\nfirst\n\nstill first\n\n\nsecond\n\n\n\n\nthird 100%\n');
    assert.deepEqual(await collect(g), ['first\n\nstill first', 'second', 'third 100%']);
    assert.deepEqual(await collect(f, { docSeparator: 'percent' }), [
      '床前明月光，\n疑是地上霜。', '红色文字\n\nsecond paragraph, same document', 'after percent\n\n\n\nafter blank run',
    ]);
    // 'paragraph' cuts at every blank line and nowhere else.
    assert.deepEqual(await collect(f, { docSeparator: 'paragraph' }), [
      '床前明月光，\n疑是地上霜。\n%\n红色文字', 'second paragraph, same document\n%\n%\nafter percent', 'after blank run\n%',
    ]);
    assert.equal((await collect(f, { docSeparator: 'line' })).length, 10);
    assert.equal((await collect(f, { docSeparator: 'file' })).length, 1);
    assert.equal((await collect(f, { stripAnsi: false }))[1]!.includes('\x1b[31m'), true);
    assert.equal(stripAnsiCodes('\x1b[1;33mA\x1b[mB\x1b[0;32;40mC\x1b[;\x1b[34;1mD\x1b[;mE\x1b'), 'ABCDE');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('prepare: text + jsonl -> train/val with EOS after every document, meta.json, progress', async () => {
  const dir = tmp();
  try {
    const docs = Array.from({ length: 300 }, (_, i) => `document number ${i} ${'x'.repeat(i % 13)}`);
    writeFileSync(join(dir, 'a.txt'), docs.slice(0, 150).join('\n%\n') + '\n%\n');
    writeFileSync(join(dir, 'b.jsonl'), docs.slice(150).map((d, i) => JSON.stringify({ id: i, body: d })).join('\n') + '\n\n');
    const progress: PrepareProgress[] = [];
    const meta = await prepare({
      inputs: [join(dir, 'a.txt'), join(dir, 'b.jsonl')], outDir: join(dir, 'out'), tokenizer: byteTokenizer,
      jsonField: 'body', valFraction: 0.2, seed: 7, tokenizerPath: 'byte', onProgress: (p) => progress.push(p),
    });
    const train = docsOf(join(dir, 'out', 'train'));
    const val = docsOf(join(dir, 'out', 'val'));
    // Every document lands exactly once, in input order within each split, on the side its hash says.
    const threshold = 0.2 * 2 ** 32;
    assert.deepEqual(train, docs.filter((d) => hashText(d, 7) >= threshold));
    assert.deepEqual(val, docs.filter((d) => hashText(d, 7) < threshold));
    assert.ok(val.length > 30 && val.length < 90, `val size ${val.length}`);
    const onDisk = JSON.parse(readFileSync(join(dir, 'out', 'meta.json'), 'utf8')) as PrepareMeta;
    assert.deepEqual(onDisk, meta);
    assert.equal(meta.dtype, 'uint16');
    assert.equal(meta.documents, 300);
    assert.equal(meta.train.documents + meta.val.documents, 300);
    const tokens = docs.reduce((a, d) => a + enc.encode(d).length + 1, 0);
    assert.equal(meta.tokens, tokens);
    assert.equal(meta.train.tokens + meta.val.tokens, tokens);
    assert.deepEqual(meta.tokenizer, { path: 'byte', vocabSize: 257, eosId: EOS });
    assert.deepEqual(meta.sources.map((s) => s.documents), [150, 150]);
    assert.equal(meta.bytesRead, meta.sources.reduce((a, s) => a + s.bytes, 0));
    assert.equal(progress.length, 2);
    assert.deepEqual(progress.at(-1), {
      file: join(dir, 'b.jsonl'), filesDone: 2, files: 2, bytesRead: meta.bytesRead, totalBytes: meta.bytesRead,
      documents: 300, tokens,
    });
    assert.deepEqual(readdirSync(join(dir, 'out')).sort(), ['meta.json', 'train.bin', 'train.idx', 'val.bin', 'val.idx']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('prepare is deterministic and the split does not depend on input order', async () => {
  const dir = tmp();
  try {
    const docs = Array.from({ length: 200 }, (_, i) => `doc ${i} ${i * i}`);
    writeFileSync(join(dir, 'x.txt'), docs.slice(0, 100).join('\n%\n'));
    writeFileSync(join(dir, 'y.txt'), docs.slice(100).join('\n%\n'));
    const run = async (out: string, inputs: string[]) =>
      prepare({ inputs: inputs.map((f) => join(dir, f)), outDir: join(dir, out), tokenizer: byteTokenizer, valFraction: 0.1 });
    await run('o1', ['x.txt', 'y.txt']);
    await run('o2', ['x.txt', 'y.txt']);
    for (const f of ['train.bin', 'train.idx', 'val.bin', 'val.idx', 'meta.json']) {
      assert.deepEqual(readFileSync(join(dir, 'o1', f)), readFileSync(join(dir, 'o2', f)), f);
    }
    await run('o3', ['y.txt', 'x.txt']);
    assert.deepEqual(new Set(docsOf(join(dir, 'o3', 'val'))), new Set(docsOf(join(dir, 'o1', 'val'))));
    // A different seed gives a different split.
    await prepare({ inputs: [join(dir, 'x.txt'), join(dir, 'y.txt')], outDir: join(dir, 'o4'), tokenizer: byteTokenizer, valFraction: 0.1, seed: 99 });
    assert.notDeepEqual(docsOf(join(dir, 'o4', 'val')), docsOf(join(dir, 'o1', 'val')));
    // valFraction 0: everything in train, an empty but valid val.
    const m = await prepare({ inputs: [join(dir, 'x.txt')], outDir: join(dir, 'o5'), tokenizer: byteTokenizer, valFraction: 0 });
    assert.equal(m.val.documents, 0);
    assert.equal(IndexedDataset.open(join(dir, 'o5', 'val')).numTokens, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('folders are walked recursively in sorted order; .dat and hidden files skipped; globs', async () => {
  const dir = tmp();
  try {
    const c = join(dir, 'corpus');
    mkdirSync(join(c, 'zh', 'deep'), { recursive: true });
    writeFileSync(join(c, 'b.txt'), 'B1\n%\nB2');
    writeFileSync(join(c, 'a.jsonl'), '{"text":"A1"}\n{"text":"A2"}\n');
    writeFileSync(join(c, 'zh', 'tang300'), 'T1\n%\nT2\n%\n');
    writeFileSync(join(c, 'zh', 'tang300.dat'), Uint8Array.from([0, 1, 2, 3, 255]));
    writeFileSync(join(c, 'zh', '.hidden'), 'H');
    writeFileSync(join(c, 'zh', 'deep', 'song100.txt'), 'S1');
    const all = ['a.jsonl', 'b.txt', 'zh/deep/song100.txt', 'zh/tang300'].map((f) => join(c, f));
    assert.deepEqual(expandInputs([c]), all);
    // Overlapping inputs keep the first occurrence.
    assert.deepEqual(expandInputs([join(c, 'b.txt'), c]), [all[1], all[0], all[2], all[3]]);
    assert.deepEqual(expandInputs([join(c, '*.txt')]), [join(c, 'b.txt')]);
    assert.deepEqual(expandInputs([join(c, '**', '*.txt')]), [join(c, 'b.txt'), join(c, 'zh/deep/song100.txt')]);
    assert.deepEqual(expandInputs([join(c, 'zh', '*')]), [join(c, 'zh/tang300')]);
    assert.deepEqual(expandInputs([join(c, '*', 'tang???')]), [join(c, 'zh/tang300')]);
    assert.deepEqual(expandInputs([join(c, '**')]), all);
    assert.throws(() => expandInputs([join(c, '*.parquet')]), /glob matched no files: .*\*\.parquet/);

    const meta = await prepare({ inputs: [c], outDir: join(dir, 'out'), tokenizer: byteTokenizer, valFraction: 0 });
    assert.deepEqual(docsOf(join(dir, 'out', 'train')), ['A1', 'A2', 'B1', 'B2', 'S1', 'T1', 'T2']);
    assert.deepEqual(meta.sources.map((s) => s.path), all);
    // Outputs written inside an input folder are not read back on the next run.
    const inside = await prepare({ inputs: [c], outDir: join(c, 'prepared'), tokenizer: byteTokenizer, valFraction: 0 });
    const again = await prepare({ inputs: [c], outDir: join(c, 'prepared'), tokenizer: byteTokenizer, valFraction: 0 });
    assert.equal(inside.documents, 7);
    assert.deepEqual(again, inside);
    const g = await prepare({ inputs: [join(c, '**', '*.txt')], outDir: join(dir, 'out2'), tokenizer: byteTokenizer, valFraction: 0 });
    assert.equal(g.documents, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('globToRegExp: * stays in one name, ** spans folders', () => {
  const re = globToRegExp('a/**/b*.txt');
  assert.ok(re.test('a/b.txt'));
  assert.ok(re.test('a/x/y/b1.txt'));
  assert.ok(!re.test('a/x/c.txt'));
  assert.ok(!globToRegExp('*.txt').test('d/e.txt'));
  assert.ok(globToRegExp('f(1)+.txt').test('f(1)+.txt'));
});

test('prepare errors: missing path, malformed jsonl (file:line), missing field, empty corpus, bad tokenizer', async () => {
  const dir = tmp();
  try {
    const out = join(dir, 'out');
    await assert.rejects(prepare({ inputs: [join(dir, 'nope.txt')], outDir: out, tokenizer: byteTokenizer }),
      /prepare: input path not found: .*nope\.txt/);
    writeFileSync(join(dir, 'bad.jsonl'), '{"text":"ok"}\n\n{"text": oops}\n');
    await assert.rejects(prepare({ inputs: [join(dir, 'bad.jsonl')], outDir: out, tokenizer: byteTokenizer }),
      /bad\.jsonl:3: invalid JSON/);
    writeFileSync(join(dir, 'nofield.jsonl'), '{"text":"ok"}\n{"content":"x"}\n');
    await assert.rejects(prepare({ inputs: [join(dir, 'nofield.jsonl')], outDir: out, tokenizer: byteTokenizer }),
      /nofield\.jsonl:2: field 'text' is missing or not a string/);
    writeFileSync(join(dir, 'empty.txt'), '%\n\n\n%\n');
    await assert.rejects(prepare({ inputs: [join(dir, 'empty.txt')], outDir: out, tokenizer: byteTokenizer }),
      /prepare: empty corpus: no documents in 1 input file/);
    await assert.rejects(prepare({ inputs: [join(dir, 'empty.txt')], outDir: out, tokenizer: { ...byteTokenizer, eosId: 257 } }),
      /eosId 257 outside \[0, vocabSize=257\)/);
    await assert.rejects(prepare({ inputs: [join(dir, 'empty.txt')], outDir: out, tokenizer: { ...byteTokenizer, vocabSize: 200 }, valFraction: 0 }),
      /eosId 256 outside/);
    await assert.rejects(prepare({ inputs: [], outDir: out, tokenizer: byteTokenizer }), /no input paths/);
    // Failed runs leave neither outputs nor temporary files.
    assert.deepEqual(readdirSync(out), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('unreadable input files are named in the error', async () => {
  const dir = tmp();
  try {
    // A folder handed straight to the document reader fails at read time (EISDIR), as an unreadable file would.
    await assert.rejects(collect(dir), new RegExp(`${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot read input file: EISDIR`));
    await assert.rejects(collect(join(dir, 'gone.txt')), /gone\.txt: cannot read input file: ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('prepare picks int32 for large vocabularies', async () => {
  const dir = tmp();
  try {
    writeFileSync(join(dir, 'a.txt'), 'hello\n%\nworld');
    const big = { encode: (s: string) => Array.from(enc.encode(s), (b) => b + 70000), eosId: 100000, vocabSize: 100001 };
    const meta = await prepare({ inputs: [join(dir, 'a.txt')], outDir: join(dir, 'o'), tokenizer: big, valFraction: 0 });
    assert.equal(meta.dtype, 'int32');
    const ds = IndexedDataset.open(join(dir, 'o', 'train'));
    assert.equal(ds.dtype, 'int32');
    assert.deepEqual([...ds.getSequence(1)], [...Array.from(enc.encode('world'), (b) => b + 70000), 100000]);
    ds.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
