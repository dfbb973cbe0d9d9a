// Criteo display-advertising TSV: `label \t I1..I13 \t C1..C26`, one sample a line.
// Integer features may be empty (missing) and, in the real data, negative; categorical
// features are 32-bit hex hashes or empty. The reader streams a file (never holding it
// whole), keeps every `worldSize`-th line for one trainer (disjoint shards), and packs
// fixed-size batches:
//   dense  (B, 13) float32, log(1 + max(x, 0)), missing -> 0
//   sparse one BigUint64Array (B) per categorical field: top 8 bits = field index
//          (the embedding server's feature group), low 56 bits = a hash of the hex value;
//          a missing value is raw id 0 of its field (hashes never produce 0)
//   labels (B) float32 0/1
import { createReadStream, openSync, readSync, closeSync } from 'node:fs';
import { fmix64, mixOut } from './embedding-hash.js';

export const CRITEO_DENSE = 13;
export const CRITEO_SPARSE = 26;

/** A batch for DLRM. `offsets[f]` (B + 1 entries) makes field f multi-hot; absent = one id per sample. */
export interface RecBatch {
  size: number;
  dense: Float32Array;
  sparse: BigUint64Array[];
  offsets?: Array<Int32Array | undefined>;
  labels: Float32Array;
}

export interface CriteoFormat {
  numDense: number;
  numSparse: number;
}

export const CRITEO_FORMAT: CriteoFormat = { numDense: CRITEO_DENSE, numSparse: CRITEO_SPARSE };

/** Raw 56-bit id of a categorical value (32-bit hex) as (hi 24 bits, lo 32 bits); never (0, 0). */
export function hashCategorical(value: number): { hi: number; lo: number } {
  const lo = fmix64(0x9e3779b9, value >>> 0);
  let hi = mixOut.hi & 0x00ffffff;
  if (hi === 0 && lo === 0) hi = 1;
  return { hi, lo };
}

function isHex(s: string): boolean {
  if (s.length === 0 || s.length > 8) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70))) return false;
  }
  return true;
}

/**
 * parseCriteoLine's common case in one pass over the characters (no split, no regex, no
 * substring per field): every trainer parses its share of every line, so this is on the
 * training step's critical path. Returns false, having possibly written part of row r, on
 * anything unusual (a wrong column count, a bad label, a non-integer, a long integer, a
 * non-hex value); the caller then parses the line with parseCriteoLine, which rewrites the
 * whole row or throws the error that names the field.
 */
export function parseCriteoLineFast(
  line: string, fmt: CriteoFormat,
  dense: Float32Array, sparseWords: Uint32Array[], labels: Float32Array, r: number,
): boolean {
  const len = line.length;
  if (len < 2 || line.charCodeAt(1) !== 9) return false;
  const l0 = line.charCodeAt(0);
  if (l0 !== 48 && l0 !== 49) return false;
  labels[r] = l0 === 49 ? 1 : 0;
  let p = 2;
  const nd = fmt.numDense, ns = fmt.numSparse;
  for (let j = 0; j < nd; j++) {
    let v = 0, digits = 0, neg = false;
    if (p < len && line.charCodeAt(p) === 45) { neg = true; p++; }
    for (; p < len; p++) {
      const c = line.charCodeAt(p);
      if (c === 9) break;
      if (c < 48 || c > 57) return false;
      v = v * 10 + (c - 48);
      digits++;
    }
    // Exact below 2^53 (15 digits); '-' alone is malformed; longer numbers take the slow path (Number's rounding).
    if (digits > 15 || (neg && digits === 0)) return false;
    if (p >= len) return false; // categorical columns must follow
    p++;
    dense[r * nd + j] = !neg && v > 0 ? Math.log1p(v) : 0;
  }
  for (let f = 0; f < ns; f++) {
    let v = 0, digits = 0;
    for (; p < len; p++) {
      const c = line.charCodeAt(p);
      if (c === 9) break;
      let d: number;
      if (c >= 48 && c <= 57) d = c - 48;
      else if (c >= 97 && c <= 102) d = c - 87;
      else if (c >= 65 && c <= 70) d = c - 55;
      else return false;
      v = v * 16 + d;
      digits++;
    }
    if (digits > 8) return false;
    if (f + 1 < ns) { if (p >= len) return false; p++; } else if (p !== len) return false;
    const w = sparseWords[f]!;
    if (digits === 0) { w[2 * r] = 0; w[2 * r + 1] = ((f << 24) >>> 0); continue; }
    const h = hashCategorical(v);
    w[2 * r] = h.lo;
    w[2 * r + 1] = ((f << 24) | h.hi) >>> 0;
  }
  return true;
}

/** Writes one parsed line into row `r` of the batch arrays. Throws `where: ...` on malformed input. */
export function parseCriteoLine(
  line: string, where: string, fmt: CriteoFormat,
  dense: Float32Array, sparseWords: Uint32Array[], labels: Float32Array, r: number,
): void {
  const cols = line.split('\t');
  const want = 1 + fmt.numDense + fmt.numSparse;
  if (cols.length !== want) throw new Error(`${where}: expected ${want} tab-separated columns (label, ${fmt.numDense} integer, ${fmt.numSparse} categorical), got ${cols.length}`);
  const lab = cols[0]!;
  if (lab !== '0' && lab !== '1') throw new Error(`${where}: label must be 0 or 1, got '${lab.slice(0, 20)}'`);
  labels[r] = lab === '1' ? 1 : 0;
  for (let j = 0; j < fmt.numDense; j++) {
    const s = cols[1 + j]!;
    let v = 0;
    if (s.length > 0) {
      const x = Number(s);
      if (!Number.isInteger(x) || !/^-?\d+$/.test(s)) throw new Error(`${where}: integer feature I${j + 1} is '${s.slice(0, 20)}', not an integer`);
      v = x > 0 ? Math.log1p(x) : 0;
    }
    dense[r * fmt.numDense + j] = v;
  }
  for (let f = 0; f < fmt.numSparse; f++) {
    const s = cols[1 + fmt.numDense + f]!;
    const w = sparseWords[f]!;
    if (s.length === 0) { w[2 * r] = 0; w[2 * r + 1] = ((f << 24) >>> 0); continue; }
    if (!isHex(s)) throw new Error(`${where}: categorical feature C${f + 1} is '${s.slice(0, 20)}', not a hex value of up to 8 digits`);
    const h = hashCategorical(parseInt(s, 16));
    w[2 * r] = h.lo;
    w[2 * r + 1] = ((f << 24) | h.hi) >>> 0;
  }
}

/** Number of lines (samples) in a file, by counting newlines (a final line without one counts). */
export function countLines(path: string): number {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(1 << 20);
  let n = 0, last = 10, got = 0;
  try {
    while ((got = readSync(fd, buf, 0, buf.length, null)) > 0) {
      for (let i = 0; i < got; i++) if (buf[i] === 10) n++;
      last = buf[got - 1]!;
    }
  } finally { closeSync(fd); }
  return last === 10 ? n : n + 1;
}

export interface CriteoReadOptions {
  batchSize: number;
  /** This reader keeps lines i with i % worldSize === rank (0-based over non-empty lines). */
  rank?: number;
  worldSize?: number;
  /** Samples of this reader's shard to skip first (resuming from a data position). */
  skip?: number;
  /** Stop after this many samples of the shard. */
  limit?: number;
  /** Yield a final short batch (default false: trainers need equal step counts). */
  keepLast?: boolean;
  format?: CriteoFormat;
}

function newBatch(B: number, fmt: CriteoFormat): { dense: Float32Array; sparse: BigUint64Array[]; words: Uint32Array[]; labels: Float32Array } {
  const sparse = Array.from({ length: fmt.numSparse }, () => new BigUint64Array(B));
  return { dense: new Float32Array(B * fmt.numDense), sparse, words: sparse.map((s) => new Uint32Array(s.buffer)), labels: new Float32Array(B) };
}

function truncate(b: ReturnType<typeof newBatch>, n: number, fmt: CriteoFormat): RecBatch {
  return { size: n, dense: b.dense.slice(0, n * fmt.numDense), sparse: b.sparse.map((s) => s.slice(0, n)), labels: b.labels.slice(0, n) };
}

/**
 * Streams batches of one trainer's shard of a Criteo TSV file. Empty lines are skipped.
 * Lines are found in each decoded chunk by a plain scan: only this shard's lines are cut
 * out and parsed, and the generator resumes once per batch, not once per line (with
 * several trainers every one of them scans every line, so per-line work is paid W times).
 */
export async function* readCriteoBatches(path: string, o: CriteoReadOptions): AsyncGenerator<RecBatch> {
  const fmt = o.format ?? CRITEO_FORMAT;
  const B = o.batchSize, rank = o.rank ?? 0, world = o.worldSize ?? 1;
  if (!Number.isInteger(B) || B < 1) throw new Error(`readCriteoBatches: batchSize must be a positive integer (got ${B})`);
  if (!(rank >= 0 && rank < world)) throw new Error(`readCriteoBatches: rank ${rank} out of range for worldSize ${world}`);
  let skip = o.skip ?? 0;
  let limit = o.limit ?? Infinity;
  let sample = 0; // index over non-empty lines
  let b = newBatch(B, fmt), n = 0;
  let lineNo = 0;
  /** Takes line [start, end) of text (1-based number lineNo): true when the batch is full. */
  const take = (text: string, start: number, end: number): boolean => {
    if (end > start && text.charCodeAt(end - 1) === 13) end--;
    if (end === start) return false;
    if (sample++ % world !== rank) return false;
    if (skip > 0) { skip--; return false; }
    limit--;
    const line = text.slice(start, end);
    if (!parseCriteoLineFast(line, fmt, b.dense, b.words, b.labels, n)) parseCriteoLine(line, `${path}:${lineNo}`, fmt, b.dense, b.words, b.labels, n);
    return ++n === B;
  };
  const stream = createReadStream(path, { encoding: 'utf8', highWaterMark: 1 << 20 });
  try {
    let pending = '';
    for await (const chunk of stream as AsyncIterable<string>) {
      if (limit <= 0) break;
      const text = pending + chunk;
      let start = 0;
      while (limit > 0) {
        const nl = text.indexOf('\n', start);
        if (nl < 0) break;
        lineNo++;
        const full = take(text, start, nl);
        start = nl + 1;
        if (full) {
          yield { size: B, dense: b.dense, sparse: b.sparse, labels: b.labels };
          b = newBatch(B, fmt);
          n = 0;
        }
      }
      pending = text.slice(start);
    }
    if (pending.length > 0 && limit > 0) {
      lineNo++;
      if (take(pending, 0, pending.length)) {
        yield { size: B, dense: b.dense, sparse: b.sparse, labels: b.labels };
        b = newBatch(B, fmt);
        n = 0;
      }
    }
    if (n > 0 && o.keepLast) yield truncate(b, n, fmt);
  } finally {
    stream.destroy();
  }
}

/** Reads a whole (small) file into batches; tests and evaluation sets. */
export async function readCriteoFile(path: string, o: CriteoReadOptions): Promise<RecBatch[]> {
  const out: RecBatch[] = [];
  for await (const b of readCriteoBatches(path, o)) out.push(b);
  return out;
}
