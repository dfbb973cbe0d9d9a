import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpeTokenizer } from '../src/text/index.js';
import { corpus, randomText, rng } from './text-helpers.js';

// dist/test/ -> test/fixtures/
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/text-gpt2-mini-tokenizer.json', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'athanor-text-'));
const fixtureJson = (): Record<string, any> => JSON.parse(readFileSync(FIXTURE, 'utf8'));

test('loads a GPT-2 style tokenizer.json with GPT-2 ids', () => {
  const t = BpeTokenizer.load(FIXTURE);
  assert.equal(t.vocabSize, 280);
  assert.equal(t.eosId, 279);
  // Ids below are GPT-2's own for these strings (its vocab starts the same way).
  assert.deepEqual(t.encode(' the'), [262]);
  assert.deepEqual(t.encode('the'), [83, 258]);
  assert.deepEqual(t.encode(' thing'), [256, 71, 278]);
  assert.deepEqual(t.encode('Hello'), [39, 68, 75, 75, 78]);
  assert.deepEqual(t.encode(' 你'), [220, 160, 121, 254]);
  assert.deepEqual(t.encode('<|endoftext|>', { allowSpecial: true }), [279]);
  assert.deepEqual(t.encode(' the<|endoftext|> the', { allowSpecial: true }), [262, 279, 262]);
  assert.equal(t.decode([262, 279, 220, 160, 121, 254]), ' the<|endoftext|> 你');
  const r = rng(3);
  for (let i = 0; i < 300; i++) {
    const s = randomText(r, 50);
    assert.equal(t.decode(t.encode(s)), s);
  }
});

test('merges as ["a","b"] pairs load the same as "a b" strings', () => {
  const j = fixtureJson();
  j['model'].merges = j['model'].merges.map((m: string) => m.split(' '));
  const p = join(dir, 'pairs.json');
  writeFileSync(p, JSON.stringify(j));
  const a = BpeTokenizer.load(FIXTURE);
  const b = BpeTokenizer.load(p);
  for (const s of [' the thing', 'Hello there, it is 你好', ' sitting on the bed']) assert.deepEqual(b.encode(s), a.encode(s));
});

test('save writes HF byte-level format and load reproduces encodings', () => {
  const t = BpeTokenizer.trainSync(corpus(800, 9), { vocabSize: 600 });
  const p = join(dir, 'sub', 'tokenizer.json');
  t.save(p);
  const j = JSON.parse(readFileSync(p, 'utf8'));
  assert.equal(j.version, '1.0');
  assert.deepEqual(j.added_tokens, [{ id: 599, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }]);
  assert.equal(j.normalizer, null);
  assert.deepEqual(j.pre_tokenizer, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
  assert.equal(j.post_processor.type, 'ByteLevel');
  assert.equal(j.decoder.type, 'ByteLevel');
  assert.equal(j.model.type, 'BPE');
  assert.equal(j.model.dropout, null);
  assert.equal(j.model.unk_token, null);
  assert.equal(j.model.fuse_unk, false);
  assert.equal(j.model.byte_fallback, false);
  assert.equal(Object.keys(j.model.vocab).length, 600);
  assert.equal(j.model.vocab['<|endoftext|>'], 599);
  // HF writes the vocab in id order; JS objects would hoist digit-only keys
  // ("0", "12") to the front, so check the file text itself.
  const text = readFileSync(p, 'utf8');
  const vocabText = text.slice(text.indexOf('"vocab": {'), text.indexOf('"merges": ['));
  const ids = [...vocabText.matchAll(/": (\d+),?\n/g)].map((m) => Number(m[1]));
  assert.deepEqual(ids, [...Array(600).keys()], 'vocab written in id order');
  for (const m of j.model.merges) assert.match(m, /^\S+ \S+$/);
  const u = BpeTokenizer.load(p);
  assert.deepEqual(u.toHfJson(), t.toHfJson());
  const r = rng(21);
  for (let i = 0; i < 500; i++) {
    const s = randomText(r, 60);
    assert.deepEqual(u.encode(s, { allowSpecial: true }), t.encode(s, { allowSpecial: true }));
  }
  // Loading the fixture and saving it keeps GPT-2's ids and merges.
  const f = BpeTokenizer.load(FIXTURE);
  const p2 = join(dir, 'fixture-resaved.json');
  f.save(p2);
  const g = BpeTokenizer.load(p2);
  assert.deepEqual(JSON.parse(readFileSync(p2, 'utf8')).model.merges, fixtureJson()['model'].merges);
  assert.deepEqual(g.encode(' the thing 你 <|endoftext|>', { allowSpecial: true }), f.encode(' the thing 你 <|endoftext|>', { allowSpecial: true }));
});

function loadBroken(name: string, edit: (j: Record<string, any>) => unknown): () => BpeTokenizer {
  const j = fixtureJson();
  const replaced = edit(j);
  const p = join(dir, name);
  writeFileSync(p, typeof replaced === 'string' ? replaced : JSON.stringify(j));
  return () => BpeTokenizer.load(p);
}

test('malformed files fail with the file and field named', () => {
  const cases: Array<[string, (j: Record<string, any>) => unknown, RegExp]> = [
    ['bad-json.json', () => '{"version": "1.0", ', /bad-json\.json: not valid JSON/],
    ['not-object.json', () => '[1,2]', /not-object\.json: not a tokenizer\.json object/],
    ['version.json', (j) => { j['version'] = '2.0'; }, /version\.json: field 'version'/],
    ['no-vocab.json', (j) => { delete j['model'].vocab; }, /no-vocab\.json: field 'model\.vocab'/],
    ['no-merges.json', (j) => { delete j['model'].merges; }, /no-merges\.json: field 'model\.merges'/],
    ['bad-merge.json', (j) => { j['model'].merges[3] = 'Ġ zzz'; }, /bad-merge\.json: field 'model\.merges\[3\]'.*zzz/],
    ['bad-merge-shape.json', (j) => { j['model'].merges[1] = 'abc'; }, /field 'model\.merges\[1\]'/],
    ['bad-id.json', (j) => { j['model'].vocab['!'] = -1; }, /bad-id\.json: field 'model\.vocab\["!"\]'/],
    ['dup-id.json', (j) => { j['model'].vocab['!'] = 5; }, /dup-id\.json: field 'model\.vocab' id 5/],
    ['missing-byte.json', (j) => { delete j['model'].vocab['Ā']; }, /missing-byte\.json: field 'model\.vocab' lacks the byte token/],
    ['pretok.json', (j) => { j['pre_tokenizer'] = { type: 'Whitespace' }; }, /pretok\.json: field 'pre_tokenizer\.type'/],
    ['model-type.json', (j) => { j['model'].type = 'WordPiece'; }, /field 'model\.type'/],
    ['suffix.json', (j) => { j['model'].end_of_word_suffix = '</w>'; }, /field 'model\.end_of_word_suffix'/],
    ['added.json', (j) => { j['added_tokens'][0].id = 'x'; }, /added\.json: field 'added_tokens\[0\]\.id'/],
    ['added-clash.json', (j) => { j['added_tokens'][0].id = 3; }, /field 'added_tokens\[0\]\.id'/],
    ['normalizer.json', (j) => { j['normalizer'] = { type: 'Lowercase' }; }, /field 'normalizer\.type'/],
  ];
  for (const [name, edit, re] of cases) assert.throws(loadBroken(name, edit), re, name);
  assert.throws(() => BpeTokenizer.load(join(dir, 'absent.json')), /absent\.json: cannot read/);
});

test('ignore_merges emits an in-vocab word whole; lone surrogates encode like TextEncoder', () => {
  const j = fixtureJson();
  j['model'].vocab['Hello'] = 280;
  j['model'].ignore_merges = true;
  const on = BpeTokenizer.fromHfJson(j, 'ignore-on.json');
  assert.deepEqual(on.encode('Hello'), [280]);
  assert.deepEqual(on.encode(' the'), [262]);
  j['model'].ignore_merges = false;
  const off = BpeTokenizer.fromHfJson(j, 'ignore-off.json');
  assert.deepEqual(off.encode('Hello'), [39, 68, 75, 75, 78]);
  const lone = 'a\ud800b\udc00';
  assert.deepEqual([...off.decodeBytes(off.encode(lone))], [...new TextEncoder().encode(lone)]);
});
