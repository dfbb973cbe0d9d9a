// Synthetic Criteo-format data with a known answer. Categorical values are drawn
// from a Zipf law per field; a hidden model decides the labels:
//   logit = bias + sum_f w_f[value] + sum_j u_j * z_j + sum_{f<g in pairFields} <v_f[value], v_g[value]>
// with z_j the standardized log(1 + I_j), and label ~ Bernoulli(sigmoid(logit)).
// Every hidden quantity is a function of (seed, field, value), so train and test files
// written with the same seed share one ground truth. The ground-truth model's own
// AUC on the generated samples is the best any learner can expect ("perfect learner").
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { fmix64, mixOut } from './embedding-hash.js';
import { aucExact, logLoss } from './metrics.js';

export interface GenerateOptions {
  rows: number;
  /** Hidden model seed: files with the same modelSeed share the ground truth. */
  modelSeed?: number;
  /** Sample stream seed (use different ones for train and test). */
  seed?: number;
  numDense?: number;
  numSparse?: number;
  /** Distinct values per categorical field (one number for all, or per field). */
  vocab?: number | number[];
  zipfS?: number;
  /** Std of the hidden per-value weights. */
  weightStd?: number;
  /** Std of the hidden dense-feature weights. */
  denseStd?: number;
  /** Fields whose hidden 4-dim vectors interact pairwise (DLRM's dot interaction can model it). */
  pairFields?: number;
  pairStd?: number;
  bias?: number;
  missingDense?: number;
  missingSparse?: number;
}

export interface GenerateReport {
  rows: number;
  positives: number;
  /** AUC of the hidden model's probabilities on these samples. */
  groundTruthAUC: number;
  groundTruthLogLoss: number;
  bytes: number;
}

/** Deterministic uniform in [0, 1) from three integers. */
function u3(a: number, b: number, c: number): number {
  const lo = fmix64((a * 0x27d4eb2d + b) >>> 0, (c ^ 0x5bd1e995) >>> 0);
  return ((mixOut.hi >>> 5) * 67108864 + (lo >>> 6)) / 9007199254740992;
}

/** Deterministic standard normal from three integers (Box-Muller on two hashes). */
function n3(a: number, b: number, c: number): number {
  const x = Math.max(u3(a, b, 2 * c), 1e-300), y = u3(a, b, 2 * c + 1);
  return Math.sqrt(-2 * Math.log(x)) * Math.cos(2 * Math.PI * y);
}

class SampleRng {
  private s: number;
  constructor(seed: number) { this.s = (seed ^ 0x6d2b79f5) >>> 0 || 1; }
  next(): number { // mulberry32
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  normal(): number {
    return Math.sqrt(-2 * Math.log(Math.max(this.next(), 1e-300))) * Math.cos(2 * Math.PI * this.next());
  }
}

function zipfCdf(n: number, s: number): Float64Array {
  const c = new Float64Array(n);
  let acc = 0;
  for (let k = 0; k < n; k++) { acc += 1 / Math.pow(k + 1, s); c[k] = acc; }
  for (let k = 0; k < n; k++) c[k] /= acc;
  return c;
}

function sampleCdf(c: Float64Array, u: number): number {
  let lo = 0, hi = c.length - 1;
  while (lo < hi) { const m = (lo + hi) >> 1; if (c[m]! < u) lo = m + 1; else hi = m; }
  return lo;
}

/** Generates samples one line at a time (`emit`), returning the hidden probabilities and labels. */
export function generateCriteoStream(o: GenerateOptions, emit: (line: string) => void): { probs: Float64Array; labels: Float64Array } {
  const F = o.numSparse ?? 26, J = o.numDense ?? 13, ms = o.modelSeed ?? 1;
  const vocab = Array.isArray(o.vocab) ? o.vocab : Array.from({ length: F }, () => (o.vocab as number | undefined) ?? 1000);
  if (vocab.length !== F) throw new Error(`generateCriteo: vocab has ${vocab.length} entries for ${F} fields`);
  const zs = o.zipfS ?? 1.05, wStd = o.weightStd ?? 0.5, dStd = o.denseStd ?? 0.3, pairF = Math.min(o.pairFields ?? 4, F);
  const pStd = o.pairStd ?? 0.5, bias = o.bias ?? -1.0, mD = o.missingDense ?? 0.05, mS = o.missingSparse ?? 0.03;
  const cdfs = new Map<string, Float64Array>();
  const cdf = (v: number): Float64Array => {
    const k = `${v}`;
    let c = cdfs.get(k);
    if (!c) { c = zipfCdf(v, zs); cdfs.set(k, c); }
    return c;
  };
  const rng = new SampleRng(o.seed ?? 7);
  const probs = new Float64Array(o.rows), labels = new Float64Array(o.rows);
  const cols: string[] = new Array(1 + J + F);
  const vecs = new Float64Array(pairF * 4);
  for (let i = 0; i < o.rows; i++) {
    let logit = bias;
    for (let j = 0; j < J; j++) {
      if (rng.next() < mD) { cols[1 + j] = ''; continue; }
      // Heavy-tailed counts, like the real integer features.
      const x = Math.max(0, Math.floor(Math.exp(1.5 + 1.2 * rng.normal())) - 1);
      cols[1 + j] = String(x);
      const z = (Math.log1p(x) - 1.6) / 1.2;
      logit += dStd * n3(ms, 1000 + j, 0) * z;
    }
    for (let f = 0; f < F; f++) {
      if (rng.next() < mS) {
        cols[1 + J + f] = '';
        if (f < pairF) vecs.fill(0, 4 * f, 4 * f + 4);
        continue;
      }
      const r = sampleCdf(cdf(vocab[f]!), rng.next());
      const hex = fmix64(ms ^ 0x1234567, (f * 0x01000193 + r) >>> 0);
      cols[1 + J + f] = hex.toString(16).padStart(8, '0');
      logit += wStd * n3(ms, f, r);
      if (f < pairF) for (let d = 0; d < 4; d++) vecs[4 * f + d] = pStd * n3(ms ^ 0xabcdef, f * 8 + d, r);
    }
    for (let f = 0; f < pairF; f++) for (let g = f + 1; g < pairF; g++) {
      let dot = 0;
      for (let d = 0; d < 4; d++) dot += vecs[4 * f + d]! * vecs[4 * g + d]!;
      logit += dot;
    }
    const p = 1 / (1 + Math.exp(-logit));
    const y = rng.next() < p ? 1 : 0;
    cols[0] = String(y);
    probs[i] = p;
    labels[i] = y;
    emit(cols.join('\t'));
  }
  return { probs, labels };
}

/** Samples in memory (tests). */
export function generateCriteoLines(o: GenerateOptions): { lines: string[]; probs: Float64Array; labels: Float64Array } {
  const lines: string[] = [];
  const r = generateCriteoStream(o, (l) => lines.push(l));
  return { lines, ...r };
}

/** Writes `rows` samples to `path` (atomically) and reports the ground-truth model's quality on them. */
export function generateCriteo(path: string, o: GenerateOptions): GenerateReport {
  // Streamed into a temporary file beside the target, then renamed: any size, never torn.
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w');
  let pending: string[] = [], bytes = 0;
  const flush = (): void => {
    if (!pending.length) return;
    const b = Buffer.from(pending.join('\n') + '\n');
    writeSync(fd, b);
    bytes += b.byteLength;
    pending = [];
  };
  let r: { probs: Float64Array; labels: Float64Array };
  try {
    r = generateCriteoStream(o, (l) => { pending.push(l); if (pending.length >= 8192) flush(); });
    flush();
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* gone */ }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  let pos = 0;
  for (const y of r.labels) pos += y;
  return { rows: o.rows, positives: pos, groundTruthAUC: aucExact(r.probs, r.labels), groundTruthLogLoss: logLoss(r.probs, r.labels, true), bytes };
}
