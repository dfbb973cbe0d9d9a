// Hugging Face `tokenizer.json` (format version "1.0") for byte-level BPE.
// We write what HF `tokenizers` writes for a ByteLevel BPE tokenizer, with
// merges as "a b" strings: every HF release reads that form, while the newer
// ["a", "b"] form is only read by tokenizers >= 0.20. Both forms are read.
import { GPT2_PATTERN } from './pretokenize.js';
import { DEFAULT_EOS, type AddedToken, type BpeTokenizerSpec, type NormalizerForm } from './tokenizer-spec.js';

type Json = Record<string, unknown>;

function byteLevel(addPrefixSpace: boolean, trimOffsets: boolean, useRegex: boolean): Json {
  return { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: trimOffsets, use_regex: useRegex };
}

/** The JSON object of a tokenizer.json file (serialize with JSON.stringify). */
export function specToHfJson(spec: BpeTokenizerSpec): Json {
  const vocab = new OrderedVocab([...spec.vocab].sort((x, y) => x[1] - y[1]));
  const custom = spec.pattern !== null && spec.pattern !== GPT2_PATTERN;
  const preTokenizer: Json = custom
    ? {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: spec.pattern }, behavior: 'Isolated', invert: false },
          byteLevel(spec.addPrefixSpace, true, false),
        ],
      }
    : byteLevel(spec.addPrefixSpace, true, spec.pattern !== null);
  const pass = spec.passthrough ?? {};
  return {
    version: '1.0',
    truncation: pass['truncation'] ?? null,
    padding: pass['padding'] ?? null,
    added_tokens: [...spec.addedTokens]
      .sort((x, y) => x.id - y.id)
      .map((t) => ({
        id: t.id,
        content: t.content,
        single_word: t.singleWord ?? false,
        lstrip: t.lstrip ?? false,
        rstrip: t.rstrip ?? false,
        normalized: t.normalized ?? !t.special,
        special: t.special,
      })),
    normalizer: spec.normalizer === null ? null : { type: spec.normalizer },
    pre_tokenizer: preTokenizer,
    post_processor: 'post_processor' in pass ? pass['post_processor'] : byteLevel(true, false, true),
    decoder: byteLevel(true, true, true),
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: spec.ignoreMerges,
      vocab,
      merges: spec.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}

/**
 * The vocab in id order, as HF writes it. A plain object cannot carry that
 * order: JS hoists integer-like keys ("0", "12") to the front. toJSON lets
 * JSON.stringify still see a normal object (used by toHfJson consumers);
 * hfJsonToText writes the ordered form.
 */
export class OrderedVocab {
  constructor(readonly entries: ReadonlyArray<readonly [string, number]>) {}
  toJSON(): Record<string, number> {
    return Object.fromEntries(this.entries);
  }
}

/** tokenizer.json text (2-space indent like HF's pretty output), vocab in id order. */
export function hfJsonToText(json: Json): string {
  const model = json['model'] as Json;
  const vocab = model['vocab'];
  if (!(vocab instanceof OrderedVocab)) return JSON.stringify(json, null, 2) + '\n';
  const marker = '\u0000vocab\u0000';
  const text = JSON.stringify({ ...json, model: { ...model, vocab: marker } }, null, 2);
  const ind = '      ';
  const body = vocab.entries.length === 0
    ? '{}'
    : '{\n' + vocab.entries.map(([k, id]) => `${ind}${JSON.stringify(k)}: ${id}`).join(',\n') + '\n    }';
  return text.replace(JSON.stringify(marker), () => body) + '\n';
}

class Fields {
  constructor(readonly source: string) {}
  fail(field: string, msg: string): never {
    throw new Error(`${this.source}: field '${field}' ${msg}`);
  }
  obj(v: unknown, field: string): Json {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(field, `must be an object, got ${kind(v)}`);
    return v as Json;
  }
  str(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, `must be a string, got ${kind(v)}`);
    return v;
  }
  bool(v: unknown, field: string, dflt: boolean): boolean {
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(field, `must be a boolean, got ${kind(v)}`);
    return v;
  }
  id(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= 2 ** 31) {
      this.fail(field, `must be a non-negative integer id, got ${JSON.stringify(v)}`);
    }
    return v;
  }
}

function kind(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

interface PreTok { pattern: string | null; addPrefixSpace: boolean }

function parsePreTokenizer(f: Fields, v: unknown, field: string): PreTok {
  const o = f.obj(v, field);
  const type = f.str(o['type'], `${field}.type`);
  if (type === 'ByteLevel') {
    return {
      pattern: f.bool(o['use_regex'], `${field}.use_regex`, true) ? GPT2_PATTERN : null,
      addPrefixSpace: f.bool(o['add_prefix_space'], `${field}.add_prefix_space`, false),
    };
  }
  if (type === 'Sequence') {
    // The one sequence we understand: a regex Split that isolates matches,
    // then a ByteLevel that only maps bytes (Llama-3/Qwen style files).
    const list = o['pretokenizers'];
    if (!Array.isArray(list) || list.length !== 2) f.fail(`${field}.pretokenizers`, 'must be [Split, ByteLevel(use_regex=false)]');
    const split = f.obj(list[0], `${field}.pretokenizers[0]`);
    const sf = `${field}.pretokenizers[0]`;
    if (split['type'] !== 'Split') f.fail(`${sf}.type`, `must be "Split", got ${JSON.stringify(split['type'])}`);
    if (split['behavior'] !== 'Isolated' || split['invert'] === true) f.fail(`${sf}.behavior`, 'only "Isolated" without invert is supported');
    const pat = f.obj(split['pattern'], `${sf}.pattern`);
    let source: string;
    if (typeof pat['Regex'] === 'string') source = pat['Regex'];
    else if (typeof pat['String'] === 'string') source = pat['String'].replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    else f.fail(`${sf}.pattern`, 'must hold "Regex" or "String"');
    try {
      new RegExp(source, 'gu');
    } catch (e) {
      f.fail(`${sf}.pattern.Regex`, `is not a JavaScript regex: ${(e as Error).message}`);
    }
    const bl = parsePreTokenizer(f, list[1], `${field}.pretokenizers[1]`);
    if (bl.pattern !== null) f.fail(`${field}.pretokenizers[1].use_regex`, 'must be false after a Split');
    return { pattern: source, addPrefixSpace: bl.addPrefixSpace };
  }
  f.fail(`${field}.type`, `"${type}" is not supported (byte-level BPE needs ByteLevel)`);
}

function parseNormalizer(f: Fields, v: unknown): NormalizerForm | null {
  if (v === null || v === undefined) return null;
  const type = f.str(f.obj(v, 'normalizer')['type'], 'normalizer.type');
  if (type === 'NFC' || type === 'NFD' || type === 'NFKC' || type === 'NFKD') return type;
  f.fail('normalizer.type', `"${type}" is not supported (only null, NFC, NFD, NFKC, NFKD)`);
}

function parseMerge(f: Fields, m: unknown, i: number): [string, string] {
  const field = `model.merges[${i}]`;
  if (typeof m === 'string') {
    const parts = m.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') f.fail(field, `must be "left right", got ${JSON.stringify(m)}`);
    return [parts[0]!, parts[1]!];
  }
  if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string') return [m[0], m[1]];
  f.fail(field, `must be "left right" or ["left", "right"], got ${JSON.stringify(m)}`);
}

/** Checks a parsed tokenizer.json and turns it into a spec. `source` names the file in errors. */
export function hfJsonToSpec(json: unknown, source: string, eosToken?: string): BpeTokenizerSpec {
  const f: Fields = new Fields(source);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${source}: not a tokenizer.json object (got ${kind(json)})`);
  }
  const root = json as Json;
  const version = f.str(root['version'], 'version');
  if (version !== '1.0') f.fail('version', `must be "1.0", got ${JSON.stringify(version)}`);

  const model = f.obj(root['model'], 'model');
  if (model['type'] !== undefined && model['type'] !== 'BPE') f.fail('model.type', `must be "BPE", got ${JSON.stringify(model['type'])}`);
  for (const k of ['continuing_subword_prefix', 'end_of_word_suffix']) {
    const v = model[k];
    if (v !== undefined && v !== null && v !== '') f.fail(`model.${k}`, `must be null or "" for byte-level BPE, got ${JSON.stringify(v)}`);
  }
  // dropout, unk_token, fuse_unk and byte_fallback cannot change a byte-level
  // encoding at inference (every byte has a token), so they are accepted as is.
  const vocabObj = f.obj(model['vocab'], 'model.vocab');
  const vocab = new Map<string, number>();
  for (const [tok, id] of Object.entries(vocabObj)) vocab.set(tok, f.id(id, `model.vocab[${JSON.stringify(tok)}]`));
  const rawMerges = model['merges'];
  if (!Array.isArray(rawMerges)) f.fail('model.merges', `must be an array, got ${kind(rawMerges)}`);
  const merges = rawMerges.map((m, i) => parseMerge(f, m, i));

  const rawAdded = root['added_tokens'] ?? [];
  if (!Array.isArray(rawAdded)) f.fail('added_tokens', `must be an array, got ${kind(rawAdded)}`);
  const addedTokens: AddedToken[] = rawAdded.map((v, i) => {
    const field = `added_tokens[${i}]`;
    const o = f.obj(v, field);
    const content = f.str(o['content'], `${field}.content`);
    if (content.length === 0) f.fail(`${field}.content`, 'must not be empty');
    return {
      id: f.id(o['id'], `${field}.id`),
      content,
      special: f.bool(o['special'], `${field}.special`, false),
      singleWord: f.bool(o['single_word'], `${field}.single_word`, false),
      lstrip: f.bool(o['lstrip'], `${field}.lstrip`, false),
      rstrip: f.bool(o['rstrip'], `${field}.rstrip`, false),
      normalized: f.bool(o['normalized'], `${field}.normalized`, false),
    };
  });

  const pre = parsePreTokenizer(f, root['pre_tokenizer'], 'pre_tokenizer');
  const dec = root['decoder'];
  if (dec !== null && dec !== undefined && f.obj(dec, 'decoder')['type'] !== 'ByteLevel') {
    f.fail('decoder.type', `must be "ByteLevel", got ${JSON.stringify((dec as Json)['type'])}`);
  }
  const passthrough: Record<string, unknown> = {};
  for (const k of ['truncation', 'padding', 'post_processor']) if (k in root) passthrough[k] = root[k];
  return {
    vocab,
    merges,
    addedTokens,
    pattern: pre.pattern,
    addPrefixSpace: pre.addPrefixSpace,
    ignoreMerges: f.bool(model['ignore_merges'], 'model.ignore_merges', false),
    normalizer: parseNormalizer(f, root['normalizer']),
    eosToken: eosToken ?? DEFAULT_EOS,
    passthrough,
  };
}
