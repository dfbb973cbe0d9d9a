// `prepare`: raw text corpora -> tokenized Megatron datasets
// <out>/train.{bin,idx}, <out>/val.{bin,idx} and <out>/meta.json.
//
// Everything streams: files are read line by line, tokens go to the .bin
// through a buffer, and only per-document lengths (12 bytes a document) stay in
// memory. Each document ends with the tokenizer's EOS id. The split is by a
// seeded hash of the document text, so it does not depend on input order and
// duplicated documents land on the same side (no train/val leakage from copies).
import { statSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { atomicWriteFileSync } from '../io/atomic-write.js';
import { type DocSeparator, type InputFormat, readDocuments } from './documents.js';
import { type IndexedDType, optimalTokenDType } from './indexed-dataset-format.js';
import { IndexedDatasetWriter } from './indexed-dataset-writer.js';
import { defaultIncludeFile, expandInputs } from './input-files.js';
import { hashText } from './seeded-rng.js';

/** What prepare needs of a tokenizer (src/text provides one; tests use a byte tokenizer). */
export interface PrepareTokenizer {
  encode(text: string): ArrayLike<number>;
  eosId: number;
  vocabSize: number;
}

export interface PrepareProgress {
  /** File being read (absolute path). */
  file: string;
  filesDone: number;
  files: number;
  bytesRead: number;
  totalBytes: number;
  documents: number;
  tokens: number;
}

export interface PrepareOptions {
  /** Text files, .jsonl files, folders (recursive) and `*`/`**` globs. */
  inputs: readonly string[];
  outDir: string;
  tokenizer: PrepareTokenizer;
  /** Recorded in meta.json so training can find the tokenizer again. */
  tokenizerPath?: string;
  /** Fraction of documents sent to validation (default 0.01). */
  valFraction?: number;
  /** Seed of the split hash (default 1234). */
  seed?: number;
  format?: InputFormat;
  jsonField?: string;
  docSeparator?: DocSeparator;
  stripAnsi?: boolean;
  /** Token dtype; default uint16 when vocabSize < 65500, else int32 (as Megatron). */
  dtype?: IndexedDType;
  /** Filter for files found inside folders or by globs. */
  include?: (path: string) => boolean;
  onProgress?: (p: PrepareProgress) => void;
  /** Minimum milliseconds between progress calls (default 500; one call per file end regardless). */
  progressIntervalMs?: number;
}

export interface SplitMeta {
  prefix: string;
  documents: number;
  tokens: number;
  binBytes: number;
}

export interface PrepareMeta {
  format: 'megatron-mmidx';
  version: 1;
  dtype: IndexedDType;
  tokenizer: { path: string | null; vocabSize: number; eosId: number };
  split: { valFraction: number; seed: number; hash: 'fnv1a32-fmix-text' };
  reader: { format: InputFormat; jsonField: string; docSeparator: DocSeparator; stripAnsi: boolean };
  inputs: string[];
  sources: { path: string; bytes: number; documents: number }[];
  train: SplitMeta;
  val: SplitMeta;
  documents: number;
  tokens: number;
  bytesRead: number;
}

export async function prepare(options: PrepareOptions): Promise<PrepareMeta> {
  const tok = options.tokenizer;
  const valFraction = options.valFraction ?? 0.01;
  const seed = options.seed ?? 1234;
  if (!(valFraction >= 0 && valFraction < 1)) throw new Error(`prepare: valFraction ${valFraction} outside [0, 1)`);
  if (!Number.isInteger(tok.vocabSize) || tok.vocabSize <= 0) throw new Error(`prepare: tokenizer vocabSize ${tok.vocabSize} is not a positive integer`);
  if (!Number.isInteger(tok.eosId) || tok.eosId < 0 || tok.eosId >= tok.vocabSize) {
    throw new Error(`prepare: tokenizer eosId ${tok.eosId} outside [0, vocabSize=${tok.vocabSize})`);
  }
  const dtype = options.dtype ?? optimalTokenDType(tok.vocabSize);
  const reader = {
    format: options.format ?? 'auto',
    jsonField: options.jsonField ?? 'text',
    docSeparator: options.docSeparator ?? 'auto',
    stripAnsi: options.stripAnsi ?? true,
  } as const;

  const outDir = resolve(options.outDir);
  // A folder input that holds the output folder must not read back old outputs.
  const baseInclude = options.include ?? defaultIncludeFile;
  const include = (p: string): boolean => !resolve(p).startsWith(outDir + sep) && baseInclude(p);
  const files = expandInputs(options.inputs, { include });
  const sizes = files.map((f) => statSync(f).size);
  const totalBytes = sizes.reduce((a, b) => a + b, 0);
  const train = new IndexedDatasetWriter(join(outDir, 'train'), { dtype, maxToken: tok.vocabSize - 1 });
  let val: IndexedDatasetWriter | undefined;
  try {
    val = new IndexedDatasetWriter(join(outDir, 'val'), { dtype, maxToken: tok.vocabSize - 1 });
  } catch (e) {
    train.abort();
    throw e;
  }
  const eos = [tok.eosId];
  const threshold = valFraction * 4294967296;
  const interval = options.progressIntervalMs ?? 500;
  let bytesRead = 0, documents = 0, tokens = 0, lastReport = 0;
  const sources: PrepareMeta['sources'] = [];
  const report = (file: string, filesDone: number, force: boolean): void => {
    if (!options.onProgress) return;
    const now = Date.now();
    if (!force && now - lastReport < interval) return;
    lastReport = now;
    options.onProgress({ file, filesDone, files: files.length, bytesRead, totalBytes, documents, tokens });
  };

  try {
    for (let fi = 0; fi < files.length; fi++) {
      const file = files[fi]!;
      let fileDocs = 0;
      const docs = readDocuments(file, { ...reader, onBytes: (n) => { bytesRead += n; } });
      for await (const text of docs) {
        let ids: ArrayLike<number>;
        try {
          ids = tok.encode(text);
        } catch (e) {
          throw new Error(`${file}: tokenizer failed on document ${fileDocs}: ${(e as Error).message}`);
        }
        const w = hashText(text, seed) < threshold ? val : train;
        w.append(ids);
        w.append(eos);
        w.endDocument();
        fileDocs++;
        documents++;
        tokens += ids.length + 1;
        if ((documents & 1023) === 0) report(file, fi, false);
      }
      sources.push({ path: file, bytes: sizes[fi]!, documents: fileDocs });
      report(file, fi + 1, true);
    }
    if (documents === 0) {
      throw new Error(`prepare: empty corpus: no documents in ${files.length} input file(s) (${files.slice(0, 3).join(', ')}${files.length > 3 ? ', ...' : ''})`);
    }
    const t = train.finish({ commit: false });
    const v = val.finish({ commit: false });
    train.commit();
    val.commit();
    const meta: PrepareMeta = {
      format: 'megatron-mmidx',
      version: 1,
      dtype,
      tokenizer: { path: options.tokenizerPath ?? null, vocabSize: tok.vocabSize, eosId: tok.eosId },
      split: { valFraction, seed, hash: 'fnv1a32-fmix-text' },
      reader: { ...reader },
      inputs: [...options.inputs],
      sources,
      train: { prefix: 'train', documents: t.documents, tokens: t.tokens, binBytes: t.binBytes },
      val: { prefix: 'val', documents: v.documents, tokens: v.tokens, binBytes: v.binBytes },
      documents,
      tokens,
      bytesRead,
    };
    atomicWriteFileSync(join(outDir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
    return meta;
  } catch (e) {
    train.abort();
    val.abort();
    throw e;
  }
}
