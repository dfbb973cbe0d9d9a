// The data a byte-level BPE tokenizer is made of, independent of where it came
// from (training or a tokenizer.json). Kept as plain data so save/load and
// training meet in one shape and the tokenizer class only has to index it.

export interface AddedToken {
  id: number;
  content: string;
  /** Special tokens (end-of-document and the like) as opposed to plain added words. */
  special: boolean;
  /** HF matching flags; carried through save/load, not used by our matcher. */
  singleWord?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
}

export type NormalizerForm = 'NFC' | 'NFD' | 'NFKC' | 'NFKD';

export interface BpeTokenizerSpec {
  /** Model vocabulary: byte-level token string -> id. */
  vocab: ReadonlyMap<string, number>;
  /** Merges in rank order, as byte-level token strings. */
  merges: ReadonlyArray<readonly [string, string]>;
  addedTokens: readonly AddedToken[];
  /** Pre-tokenizer regex source, or null for "no split" (ByteLevel use_regex=false). */
  pattern: string | null;
  addPrefixSpace: boolean;
  /** HF `ignore_merges`: a word that is itself in the vocab is emitted whole. */
  ignoreMerges: boolean;
  normalizer: NormalizerForm | null;
  /** Content of the end-of-document token. */
  eosToken: string;
  /**
   * tokenizer.json sections we do not interpret (post_processor, truncation,
   * padding) but write back unchanged, so load+save does not lose them.
   */
  passthrough?: Record<string, unknown>;
}

export const DEFAULT_EOS = '<|endoftext|>';
