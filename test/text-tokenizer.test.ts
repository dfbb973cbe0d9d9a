import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BpeTokenizer, BYTE_TO_CHAR, GPT2_PATTERN, MergeTable, PreTokenizer, tokenStringToBytes,
} from '../src/text/index.js';
import { corpus, randomText, rng } from './text-helpers.js';

const docs = corpus(1500);
const tok = BpeTokenizer.trainSync(docs, { vocabSize: 700 });

test('byte table matches GPT-2 bytes_to_unicode', () => {
  assert.equal(new Set(BYTE_TO_CHAR).size, 256);
  assert.equal(BYTE_TO_CHAR[0x21], '!');
  assert.equal(BYTE_TO_CHAR[0x20], 'Ġ');
  assert.equal(BYTE_TO_CHAR[0x0a], 'Ċ');
  assert.equal(BYTE_TO_CHAR[0x00], 'Ā');
  assert.equal(BYTE_TO_CHAR[0xad], 'Ń');
  assert.equal(BYTE_TO_CHAR[0xe4], 'ä');
  for (let b = 0; b < 256; b++) assert.deepEqual([...tokenStringToBytes(BYTE_TO_CHAR[b]!)!], [b]);
  assert.equal(tokenStringToBytes('<\u4e00>'), null);
});

test('GPT-2 scanner agrees with the reference regex', () => {
  const fast = new PreTokenizer();
  const ref = new PreTokenizer({ forceRegex: true });
  assert.equal(ref.pattern, GPT2_PATTERN);
  const fixed = ["I'm here, they're 're 'RE ''s", 'a   b\n\n c  ', '  ', ' ', '\t x', "x'", "'", 'ab12 3.5!! ?', '\u3000你好\u3000 世界  ', '\ud83d\ude00 \ud800x \udc00'];
  for (const s of fixed) assert.deepEqual(fast.split(s), ref.split(s), JSON.stringify(s));
  const r = rng(7);
  for (let i = 0; i < 3000; i++) {
    const s = randomText(r, 1 + Math.floor(r() * 40));
    const words = fast.split(s);
    assert.deepEqual(words, ref.split(s), JSON.stringify(s));
    assert.equal(words.join(''), s);
  }
});

test('a CJK run is one pre-token and contractions split off', () => {
  const pre = new PreTokenizer();
  assert.deepEqual(pre.split('你好世界，很好'), ['你好世界', '，', '很好']);
  assert.deepEqual(pre.split("He's  here 42"), ['He', "'s", ' ', ' here', ' 42']);
});

test('decode(encode(s)) === s on random text across planes', () => {
  const r = rng(11);
  for (let i = 0; i < 2000; i++) {
    const s = randomText(r, Math.floor(r() * 80));
    const ids = tok.encode(s);
    for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < tok.vocabSize);
    assert.equal(tok.decode(ids), s);
    assert.deepEqual([...tok.encodeToInt32(s)], ids);
  }
});

test('Chinese text compresses and round-trips', () => {
  const s = '我们在学习神经网络的训练。你好，世界！数据和模型是训练的';
  const ids = tok.encode(s);
  assert.equal(tok.decode(ids), s);
  // The corpus is full of these words, so BPE must have merged inside their bytes.
  assert.ok(ids.length < Buffer.byteLength(s) / 2, `${ids.length} tokens for ${Buffer.byteLength(s)} bytes`);
  for (const w of ['你好', '我们', '世界', '训练']) assert.equal(tok.encode(w).length, 1, `${w} is one token`);
});

test('training text compresses and vocab size is exact', () => {
  assert.equal(tok.vocabSize, 700);
  assert.equal(tok.eosId, 699);
  assert.equal(tok.idToToken(699), '<|endoftext|>');
  const text = docs.slice(0, 50).join('\n');
  assert.ok(tok.encode(text).length < Buffer.byteLength(text) / 3);
});

test('special tokens are recognized only when asked', () => {
  const s = 'end.<|endoftext|>Next 文档';
  const withSpecial = tok.encode(s, { allowSpecial: true });
  assert.equal(withSpecial.filter((i) => i === tok.eosId).length, 1);
  assert.equal(tok.decode(withSpecial), s);
  const plain = tok.encode(s);
  assert.ok(!plain.includes(tok.eosId));
  assert.equal(tok.decode(plain), s);
  assert.deepEqual(tok.encode('<|endoftext|><|endoftext|>', { allowSpecial: true }), [tok.eosId, tok.eosId]);
  // Training text containing the marker never yields a token holding part of it.
  const t2 = BpeTokenizer.trainSync(['a<|endoftext|>b'.repeat(200)], { vocabSize: 300 });
  for (let id = 256; id < t2.vocabSize - 1; id++) assert.ok(!t2.idToToken(id)!.includes('|'), t2.idToToken(id));
});

test('decoding a split UTF-8 character does not throw', () => {
  const id = (b: number): number => tok.tokenToId(BYTE_TO_CHAR[b]!)!;
  assert.equal(tok.decode([id(0xe4), id(0xbd)]), '\ufffd');
  assert.equal(tok.decode([id(0xe4), id(0xbd), id(0xa0)]), '你');
  assert.equal(tok.decode([id(0xa0)]), '\ufffd');
  assert.throws(() => tok.decode([tok.vocabSize]), /not in the vocabulary/);
  const ids = tok.encode('😀😀');
  for (let cut = 0; cut <= ids.length; cut++) {
    const joined = tok.decode(ids.slice(0, cut)) + tok.decode(ids.slice(cut));
    assert.ok(joined === '😀😀' || joined.includes('\ufffd'));
  }
  assert.equal(tok.decode(tok.encode('\ufeffBOM')), '\ufeffBOM');
});

test('training is deterministic and sync/async agree', async () => {
  const a = BpeTokenizer.trainSync(docs, { vocabSize: 500 });
  async function* gen(): AsyncGenerator<string> {
    for (const d of docs) yield d;
  }
  const b = await BpeTokenizer.train(gen(), { vocabSize: 500 });
  const c = await BpeTokenizer.train(docs, { vocabSize: 500 });
  assert.deepEqual(a.toHfJson(), b.toHfJson());
  assert.deepEqual(a.toHfJson(), c.toHfJson());
  // A smaller vocab is a prefix of a larger one's merges (same ranking).
  const small = a.spec.merges;
  assert.deepEqual(tok.spec.merges.slice(0, small.length), small);
});

test('minFrequency and option checks', () => {
  const few = BpeTokenizer.trainSync(docs, { vocabSize: 5000, minFrequency: 400 });
  assert.ok(few.numMerges > 0 && few.numMerges < 300, `${few.numMerges} merges`);
  assert.throws(() => BpeTokenizer.trainSync(docs, { vocabSize: 256 }), /vocabSize/);
  assert.throws(() => BpeTokenizer.trainSync(docs, { vocabSize: 300, specialTokens: ['<a>', '<a>'] }), /duplicates/);
  const t = BpeTokenizer.trainSync(docs.slice(0, 10), { vocabSize: 400, specialTokens: ['<pad>'] });
  assert.equal(t.idToToken(t.eosId), '<|endoftext|>');
  assert.equal(t.encode('<pad>', { allowSpecial: true }).length, 1);
});

test('long words: heap merge path equals the short path', () => {
  const spec = tok.spec;
  const triples = spec.merges.map(([a, b]) => [spec.vocab.get(a)!, spec.vocab.get(b)!, spec.vocab.get(a + b)!] as const);
  const table = new MergeTable(triples, tok.vocabSize);
  const enc = new TextEncoder();
  const r = rng(5);
  const words = ['我们在学习神经网络的训练'.repeat(5), 'a'.repeat(200), ' tokenizer'.repeat(9), randomText(r, 60)];
  for (let i = 0; i < 200; i++) words.push(corpus(1, i)[0]!.replace(/\s/g, ''));
  for (const w of words) {
    const bytes = enc.encode(w);
    const ids = Int32Array.from(bytes, (b) => spec.vocab.get(BYTE_TO_CHAR[b]!)!);
    const x = ids.slice();
    const y = ids.slice();
    const nx = table.applyShort(x, x.length);
    const ny = table.applyHeap(y, y.length);
    assert.deepEqual([...x.subarray(0, nx)], [...y.subarray(0, ny)], w);
  }
  const long = ' ' + '训练数据 '.repeat(3000) + 'x'.repeat(5000) + ' '.repeat(10000);
  assert.equal(tok.decode(tok.encode(long)), long);
});
