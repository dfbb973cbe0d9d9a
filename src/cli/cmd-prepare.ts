// `athanor prepare`: tokenizer (trained here or loaded) + Megatron .bin/.idx shards.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from '../train/overrides.js';
import { BpeTokenizer } from '../text/index.js';
import { prepare } from '../data/prepare.js';
import { expandInputs } from '../data/input-files.js';
import { readDocuments } from '../data/documents.js';

export const prepareHelp = `athanor prepare <inputs...> --out DIR [options]
  Tokenizes text (.txt, fortune files with % separators, .jsonl with a "text" field;
  folders and globs allowed) into Megatron indexed-dataset shards DIR/train.{bin,idx}
  and DIR/val.{bin,idx}, streaming in constant memory.

options:
  --out DIR               output directory (required)
  --tokenizer PATH        an existing Hugging Face tokenizer.json (byte-level BPE)
  --vocab-size N          otherwise train a byte-level BPE tokenizer of N tokens (default 2048)
  --val-fraction F        fraction of documents held out for validation (default 0.01)
  --seed N                split seed (default 1234)
  --json-field NAME       field of .jsonl records holding the text (default text)`;

export async function runPrepare(argv: string[]): Promise<number> {
  const { positional, flags } = parseArgs(argv);
  const known = ['out', 'tokenizer', 'vocab-size', 'val-fraction', 'seed', 'json-field'];
  for (const k of Object.keys(flags)) if (!known.includes(k)) throw new Error(`prepare: unknown option --${k}\n\n${prepareHelp}`);
  if (positional.length === 0) throw new Error(`prepare: no input files given\n\n${prepareHelp}`);
  const out = flags.out;
  if (!out) throw new Error('prepare: --out DIR is required');
  for (const p of positional) {
    if (!/[*?]/.test(p) && !existsSync(p)) throw new Error(`prepare: input '${p}' does not exist`);
  }
  const jsonField = flags['json-field'] ?? 'text';
  let tok: BpeTokenizer;
  const tokPath = join(out, 'tokenizer.json');
  if (flags.tokenizer) {
    tok = BpeTokenizer.load(flags.tokenizer);
    tok.save(tokPath);
  } else {
    const vocabSize = Number(flags['vocab-size'] ?? 2048);
    if (!Number.isInteger(vocabSize) || vocabSize < 257) throw new Error(`prepare: --vocab-size must be an integer >= 257, got ${flags['vocab-size']}`);
    const files = expandInputs(positional);
    const t0 = performance.now();
    async function* docs() {
      for (const f of files) yield* readDocuments(f, { jsonField });
    }
    tok = await BpeTokenizer.train(docs(), { vocabSize });
    tok.save(tokPath);
    console.log(`trained a ${tok.vocabSize}-token byte-level BPE tokenizer in ${((performance.now() - t0) / 1000).toFixed(1)} s → ${tokPath}`);
  }
  const t0 = performance.now();
  const meta = await prepare({
    inputs: positional, outDir: out, tokenizer: tok, tokenizerPath: tokPath, jsonField,
    valFraction: flags['val-fraction'] !== undefined ? Number(flags['val-fraction']) : undefined,
    seed: flags.seed !== undefined ? Number(flags.seed) : undefined,
  });
  const s = (performance.now() - t0) / 1000;
  console.log(`prepared ${meta.documents.toLocaleString('en-US')} documents, ${meta.tokens.toLocaleString('en-US')} tokens ` +
    `(train ${meta.train.tokens.toLocaleString('en-US')}, val ${meta.val.tokens.toLocaleString('en-US')}) from ${(meta.bytesRead / 1e6).toFixed(1)} MB in ${s.toFixed(1)} s → ${out}`);
  return 0;
}
