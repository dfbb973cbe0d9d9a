// Public surface of the tokenizer package.
export { BpeTokenizer, type EncodeOptions } from './tokenizer.js';
export type { BpeTrainOptions } from './train-tokenizer.js';
export type { AddedToken, BpeTokenizerSpec, NormalizerForm } from './tokenizer-spec.js';
export { DEFAULT_EOS } from './tokenizer-spec.js';
export { GPT2_PATTERN, PreTokenizer } from './pretokenize.js';
export { BYTE_TO_CHAR, bytesToTokenString, tokenStringToBytes } from './byte-level.js';
export { specToHfJson, hfJsonToSpec, hfJsonToText, OrderedVocab } from './hf-tokenizer-json.js';
export { WordCounter } from './word-counter.js';
export { MergeTable } from './bpe-merges.js';
export { trainBpe } from './bpe-trainer.js';
