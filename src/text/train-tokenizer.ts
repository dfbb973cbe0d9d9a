// Training entry points: stream documents into a WordCounter, learn merges,
// and lay the result out GPT-2 style (bytes, then merges, then special tokens
// at the end, so the end-of-document token is the last id as in GPT-2).
import { trainBpe } from './bpe-trainer.js';
import { GPT2_PATTERN, PreTokenizer } from './pretokenize.js';
import { WordCounter } from './word-counter.js';
import { DEFAULT_EOS, type AddedToken, type BpeTokenizerSpec } from './tokenizer-spec.js';

export interface BpeTrainOptions {
  /** Total vocabulary, counting the 256 byte tokens and the special tokens. */
  vocabSize: number;
  /** Pairs seen fewer times than this are never merged (default 2). */
  minFrequency?: number;
  /** Default ['<|endoftext|>']; the end-of-document token is added if missing. */
  specialTokens?: readonly string[];
  /** End-of-document token (default '<|endoftext|>'). */
  eosToken?: string;
  /** Pre-tokenizer regex source (default GPT-2's). */
  pattern?: string;
}

interface Resolved {
  specials: string[];
  eos: string;
  pre: PreTokenizer;
  minFrequency: number;
  vocabSize: number;
}

function resolve(opts: BpeTrainOptions): Resolved {
  const eos = opts.eosToken ?? DEFAULT_EOS;
  const specials = [...(opts.specialTokens ?? [DEFAULT_EOS])];
  if (!specials.includes(eos)) specials.push(eos);
  for (const s of specials) if (s.length === 0) throw new Error('train: option specialTokens: empty string');
  if (new Set(specials).size !== specials.length) throw new Error('train: option specialTokens: duplicates');
  const v = opts.vocabSize;
  if (!Number.isInteger(v) || v < 256 + specials.length || v > 1 << 24) {
    throw new Error(`train: option vocabSize must be an integer in [${256 + specials.length}, 2^24], got ${v}`);
  }
  const minFrequency = opts.minFrequency ?? 2;
  if (!(minFrequency >= 0)) throw new Error(`train: option minFrequency must be >= 0, got ${minFrequency}`);
  return { specials, eos, pre: new PreTokenizer({ pattern: opts.pattern ?? GPT2_PATTERN }), minFrequency, vocabSize: v };
}

export function specFromCounts(counter: WordCounter, r: Resolved): BpeTokenizerSpec {
  const { tokens, merges } = trainBpe(counter.counts(), r.vocabSize - r.specials.length, r.minFrequency);
  const vocab = new Map<string, number>();
  tokens.forEach((t, id) => vocab.set(t, id));
  const addedTokens: AddedToken[] = r.specials.map((content) => {
    // A special string that training already made a token (impossible with the
    // GPT-2 pattern, possible with a custom one) keeps that id.
    let id = vocab.get(content);
    if (id === undefined) {
      id = vocab.size;
      vocab.set(content, id);
    }
    return { id, content, special: true };
  });
  return {
    vocab,
    merges: merges.map(([a, b]) => [tokens[a]!, tokens[b]!] as const),
    addedTokens,
    pattern: r.pre.pattern,
    addPrefixSpace: false,
    ignoreMerges: false,
    normalizer: null,
    eosToken: r.eos,
  };
}

export function trainSpecSync(docs: Iterable<string>, opts: BpeTrainOptions): BpeTokenizerSpec {
  const r = resolve(opts);
  const counter = new WordCounter(r.pre, r.specials);
  if (typeof docs === 'string') counter.addDocument(docs);
  else for (const d of docs) counter.addDocument(d);
  return specFromCounts(counter, r);
}

export async function trainSpec(
  docs: Iterable<string> | AsyncIterable<string>,
  opts: BpeTrainOptions,
): Promise<BpeTokenizerSpec> {
  const r = resolve(opts);
  const counter = new WordCounter(r.pre, r.specials);
  // A bare string is iterable too, but as characters; treat it as one document.
  if (typeof docs === 'string') counter.addDocument(docs);
  else if (Symbol.asyncIterator in docs) for await (const d of docs) counter.addDocument(d);
  // Sync sources stay sync: awaiting each document would cost a microtask apiece.
  else for (const d of docs) counter.addDocument(d);
  return specFromCounts(counter, r);
}
