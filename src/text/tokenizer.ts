// Byte-level BPE tokenizer: encode/decode over a spec (trained or loaded).
import { readFileSync } from 'node:fs';
import { atomicWriteFileSync } from '../io/atomic-write.js';
import { BYTE_TO_CHAR, bytesToTokenString, tokenStringToBytes } from './byte-level.js';
import { MergeTable } from './bpe-merges.js';
import { hfJsonToSpec, hfJsonToText, specToHfJson } from './hf-tokenizer-json.js';
import { PreTokenizer, SpecialSplitter, type SpanSink } from './pretokenize.js';
import { SpanTable } from './span-table.js';
import { trainSpec, trainSpecSync, type BpeTrainOptions } from './train-tokenizer.js';
import type { BpeTokenizerSpec } from './tokenizer-spec.js';

export interface EncodeOptions {
  /**
   * Recognize added/special token strings ("<|endoftext|>") in the text and
   * emit their ids. Off by default, so text from the wild cannot inject
   * document boundaries; then such strings are encoded as ordinary bytes.
   */
  allowSpecial?: boolean;
}

/** Words longer than this are not cached: they are rare and would pin memory. */
const MAX_CACHED_WORD = 256;
const MAX_CACHE_ENTRIES = 1 << 18;

export class BpeTokenizer {
  readonly spec: BpeTokenizerSpec;
  /** One more than the largest id (vocab and added tokens). */
  readonly vocabSize: number;
  private readonly idToStr: (string | undefined)[];
  private readonly idBytes: (Uint8Array | undefined)[];
  private readonly strToId = new Map<string, number>();
  private readonly byteId = new Int32Array(256);
  private readonly merges: MergeTable;
  private readonly pre: PreTokenizer;
  private readonly specials: SpecialSplitter;
  private readonly eos: number;
  // Per-word cache: words (as spans, hashed in place) -> [offset, length] in
  // an id pool. Natural text repeats a small set of words, so most words cost
  // one hash probe.
  private readonly cache = new SpanTable(1 << 14);
  private cacheOff = new Int32Array(1 << 13);
  private cacheLen = new Int32Array(1 << 13);
  private idPool = new Int32Array(1 << 15);
  private idPoolUsed = 0;
  private readonly utf8 = new TextEncoder();
  private symBuf = new Int32Array(1024);
  // Output of the callbacks below: one growable buffer reused across calls, so
  // the hot loop neither allocates closures nor grows a JS array per call.
  private buf = new Int32Array(1 << 12);
  private len = 0;
  private readonly onWord: SpanSink = (src, s, e) => this.pushWord(src, s, e);
  private readonly onText: SpanSink = (src, s, e) => this.pre.forEachSpan(src, s, e, this.onWord);
  private readonly onSpecial = (id: number): void => {
    if (this.len === this.buf.length) this.grow(1);
    this.buf[this.len++] = id;
  };

  /** `source` names the origin (a file path) in error messages. */
  constructor(spec: BpeTokenizerSpec, source = 'tokenizer') {
    this.spec = spec;
    const fail: (field: string, msg: string) => never = (field, msg) => {
      throw new Error(`${source}: field '${field}' ${msg}`);
    };
    let maxId = -1;
    for (const id of spec.vocab.values()) maxId = Math.max(maxId, id);
    for (const t of spec.addedTokens) maxId = Math.max(maxId, t.id);
    this.vocabSize = maxId + 1;
    this.idToStr = new Array(this.vocabSize);
    this.idBytes = new Array(this.vocabSize);
    for (const [tok, id] of spec.vocab) {
      const prev = this.idToStr[id];
      if (prev !== undefined) fail('model.vocab', `id ${id} is used by both ${JSON.stringify(prev)} and ${JSON.stringify(tok)}`);
      this.idToStr[id] = tok;
      this.strToId.set(tok, id);
      // A vocab entry outside the byte alphabet (GPT-2 keeps "<|endoftext|>" in
      // its vocab) decodes to its own UTF-8 text.
      this.idBytes[id] = tokenStringToBytes(tok) ?? this.utf8.encode(tok);
    }
    const addedIds = new Map<string, number>();
    spec.addedTokens.forEach((t, i) => {
      const prev = this.idToStr[t.id];
      if (prev !== undefined && prev !== t.content) {
        fail(`added_tokens[${i}].id`, `${t.id} already belongs to ${JSON.stringify(prev)}`);
      }
      if (addedIds.has(t.content)) fail(`added_tokens[${i}].content`, `${JSON.stringify(t.content)} appears twice`);
      addedIds.set(t.content, t.id);
      this.idToStr[t.id] = t.content;
      this.idBytes[t.id] = this.utf8.encode(t.content);
    });
    for (let b = 0; b < 256; b++) {
      const id = spec.vocab.get(BYTE_TO_CHAR[b]!);
      if (id === undefined) {
        fail('model.vocab', `lacks the byte token ${JSON.stringify(BYTE_TO_CHAR[b])} (byte 0x${b.toString(16).padStart(2, '0')}); byte-level BPE needs all 256`);
      }
      this.byteId[b] = id;
    }
    const triples = spec.merges.map(([a, b], r): [number, number, number] => {
      const ia = spec.vocab.get(a);
      const ib = spec.vocab.get(b);
      const im = spec.vocab.get(a + b);
      if (ia === undefined) fail(`model.merges[${r}]`, `left token ${JSON.stringify(a)} is not in model.vocab`);
      if (ib === undefined) fail(`model.merges[${r}]`, `right token ${JSON.stringify(b)} is not in model.vocab`);
      if (im === undefined) fail(`model.merges[${r}]`, `merged token ${JSON.stringify(a + b)} is not in model.vocab`);
      return [ia, ib, im];
    });
    this.merges = new MergeTable(triples, Math.max(this.vocabSize, 1));
    this.pre = new PreTokenizer({ pattern: spec.pattern, addPrefixSpace: spec.addPrefixSpace });
    this.specials = new SpecialSplitter(addedIds);
    this.eos = addedIds.get(spec.eosToken) ?? spec.vocab.get(spec.eosToken) ?? -1;
  }

  /** Trains on documents from any (async) iterable; only word counts are held in memory. */
  static async train(docs: Iterable<string> | AsyncIterable<string>, opts: BpeTrainOptions): Promise<BpeTokenizer> {
    return new BpeTokenizer(await trainSpec(docs, opts), 'train');
  }

  static trainSync(docs: Iterable<string>, opts: BpeTrainOptions): BpeTokenizer {
    return new BpeTokenizer(trainSpecSync(docs, opts), 'train');
  }

  /** Reads a Hugging Face tokenizer.json (byte-level BPE). */
  static load(path: string, opts: { eosToken?: string } = {}): BpeTokenizer {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new Error(`${path}: cannot read tokenizer: ${(e as Error).message}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new Error(`${path}: not valid JSON: ${(e as Error).message}`);
    }
    return new BpeTokenizer(hfJsonToSpec(json, path, opts.eosToken), path);
  }

  static fromHfJson(json: unknown, source = 'tokenizer.json', opts: { eosToken?: string } = {}): BpeTokenizer {
    return new BpeTokenizer(hfJsonToSpec(json, source, opts.eosToken), source);
  }

  /** tokenizer.json content as a plain object (vocab key order is not id order; save() keeps it). */
  toHfJson(): Record<string, unknown> {
    return JSON.parse(this.toHfJsonText()) as Record<string, unknown>;
  }

  /** tokenizer.json text exactly as save() writes it. */
  toHfJsonText(): string {
    return hfJsonToText(specToHfJson(this.spec));
  }

  /** Writes a Hugging Face tokenizer.json, atomically. */
  save(path: string): void {
    atomicWriteFileSync(path, this.toHfJsonText());
  }

  /** Id of the end-of-document token; throws when the tokenizer has none. */
  get eosId(): number {
    if (this.eos < 0) throw new Error(`tokenizer has no end-of-document token ${JSON.stringify(this.spec.eosToken)}`);
    return this.eos;
  }

  get numMerges(): number {
    return this.merges.size;
  }

  idToToken(id: number): string | undefined {
    return this.idToStr[id];
  }

  tokenToId(token: string): number | undefined {
    return this.strToId.get(token) ?? this.spec.addedTokens.find((t) => t.content === token)?.id;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const n = this.run(text, opts);
    const out = new Array<number>(n);
    const buf = this.buf;
    for (let i = 0; i < n; i++) out[i] = buf[i]!;
    this.release();
    return out;
  }

  /** Same ids as encode(), as an Int32Array (what data preparation writes out). */
  encodeToInt32(text: string, opts: EncodeOptions = {}): Int32Array {
    const out = this.buf.slice(0, this.run(text, opts));
    this.release();
    return out;
  }

  /** Encodes into this.buf[0..n) and returns n. */
  private run(text: string, opts: EncodeOptions): number {
    if (this.spec.normalizer !== null) text = text.normalize(this.spec.normalizer);
    this.len = 0;
    if (opts.allowSpecial) this.specials.forEach(text, this.onText, this.onSpecial);
    else this.pre.forEachSpan(text, 0, text.length, this.onWord);
    return this.len;
  }

  private release(): void {
    // One huge input should not pin its output buffer for the tokenizer's life.
    if (this.buf.length > 1 << 22) this.buf = new Int32Array(1 << 12);
  }

  private grow(extra: number): void {
    const b = new Int32Array(Math.max(this.buf.length * 2, this.len + extra));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  /** Raw bytes of the ids, concatenated. Throws on an id outside the vocabulary. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.idBytes[ids[i]!];
      if (b === undefined) throw new Error(`decode: id ${ids[i]} at position ${i} is not in the vocabulary (size ${this.vocabSize})`);
      total += b.length;
    }
    const out = new Uint8Array(total);
    let off = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.idBytes[ids[i]!]!;
      out.set(b, off);
      off += b.length;
    }
    return out;
  }

  /**
   * Text of the ids. Bytes are joined first and decoded once, so a character
   * split across tokens comes out whole; an incomplete sequence (a prefix of
   * a longer encoding) becomes U+FFFD instead of throwing.
   */
  decode(ids: ArrayLike<number>): string {
    // ignoreBOM keeps a leading U+FEFF in the text, so decode(encode(s)) === s.
    return new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }).decode(this.decodeBytes(ids));
  }

  private pushWord(src: string, s: number, e: number): void {
    const h = SpanTable.hash(src, s, e);
    const k = this.cache.find(src, s, e, h);
    let ids: Int32Array;
    let from: number;
    let n: number;
    if (k >= 0) {
      ids = this.idPool;
      from = this.cacheOff[k]!;
      n = this.cacheLen[k]!;
    } else {
      n = this.bpe(src, s, e);
      ids = this.symBuf;
      from = 0;
      if (e - s <= MAX_CACHED_WORD) this.remember(src, s, e, h, ids, n);
    }
    if (this.len + n > this.buf.length) this.grow(n);
    const buf = this.buf;
    let len = this.len;
    for (let i = from, end = from + n; i < end; i++) buf[len++] = ids[i]!;
    this.len = len;
  }

  private remember(src: string, s: number, e: number, h: number, ids: Int32Array, n: number): void {
    if (this.cache.size >= MAX_CACHE_ENTRIES) {
      // Dropping everything is crude but keeps memory bounded on adversarial
      // input; natural text refills the hot words within a few kB.
      this.cache.clear();
      this.idPoolUsed = 0;
    }
    const k = this.cache.insert(src, s, e, h);
    if (k >= this.cacheOff.length) {
      const n = this.cacheOff.length * 2;
      const off = new Int32Array(n);
      off.set(this.cacheOff);
      const len = new Int32Array(n);
      len.set(this.cacheLen);
      this.cacheOff = off;
      this.cacheLen = len;
    }
    if (this.idPoolUsed + n > this.idPool.length) {
      const pool = new Int32Array(Math.max(this.idPool.length * 2, this.idPoolUsed + n));
      pool.set(this.idPool.subarray(0, this.idPoolUsed));
      this.idPool = pool;
    }
    this.idPool.set(ids.subarray(0, n), this.idPoolUsed);
    this.cacheOff[k] = this.idPoolUsed;
    this.cacheLen[k] = n;
    this.idPoolUsed += n;
  }

  /**
   * BPE of src[s..e) into symBuf[0..n), returning n. UTF-8 is produced inline
   * (straight into byte-token ids) because slicing the word and calling
   * TextEncoder cost more than the merging for short words.
   */
  private bpe(src: string, s: number, e: number): number {
    if (this.symBuf.length < (e - s) * 3) this.symBuf = new Int32Array((e - s) * 3 + 16);
    const syms = this.symBuf;
    const byteId = this.byteId;
    let n = 0;
    for (let i = s; i < e; i++) {
      let c = src.charCodeAt(i);
      if (c < 0x80) {
        syms[n++] = byteId[c]!;
        continue;
      }
      if (c < 0x800) {
        syms[n++] = byteId[0xc0 | (c >> 6)]!;
        syms[n++] = byteId[0x80 | (c & 63)]!;
        continue;
      }
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < e ? src.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          c = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
          i++;
          syms[n++] = byteId[0xf0 | (c >> 18)]!;
          syms[n++] = byteId[0x80 | ((c >> 12) & 63)]!;
          syms[n++] = byteId[0x80 | ((c >> 6) & 63)]!;
          syms[n++] = byteId[0x80 | (c & 63)]!;
          continue;
        }
        c = 0xfffd; // lone surrogate: what TextEncoder writes too
      }
      syms[n++] = byteId[0xe0 | (c >> 12)]!;
      syms[n++] = byteId[0x80 | ((c >> 6) & 63)]!;
      syms[n++] = byteId[0x80 | (c & 63)]!;
    }
    if (this.spec.ignoreMerges) {
      const whole = this.strToId.get(bytesToTokenString(this.utf8.encode(src.slice(s, e))));
      if (whole !== undefined) {
        syms[0] = whole;
        return 1;
      }
    }
    return this.merges.apply(syms, n);
  }
}
