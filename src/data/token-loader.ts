// GPT training batches from a token stream (all documents concatenated, EOS
// between them, as GPT pretraining does). The stream is cut into
// W = floor((numTokens - 1) / T) non-overlapping windows of T+1 tokens
// (window w covers tokens [w*T, w*T + T]); x is the first T, y the last T.
//
// Order: one global sample sequence shared by all ranks. Global sample s is
// window perm_e[s mod W] with e = floor(s / W) and perm_e a permutation seeded
// by (seed, e). Global batch g holds samples [g*B*world, (g+1)*B*world); rank r
// takes [g*B*world + r*B, g*B*world + (r+1)*B). So dp=2 with B=4 sees exactly
// the 8 samples that dp=1 with B=8 sees, and the whole state is one counter.
import type { TokenSource } from './indexed-dataset-reader.js';
import { mixSeed, seededPermutation } from './seeded-rng.js';

export interface TokenLoaderOptions {
  /** Sequence length (tokens per row of x and y). */
  T: number;
  /** Shuffle seed (default 0). */
  seed?: number;
  /** Data-parallel rank and world size (default 0 of 1). */
  rank?: number;
  worldSize?: number;
  /** Shuffle windows each epoch (default true); false reads them in order. */
  shuffle?: boolean;
}

/** Small JSON-able position of a loader; restore() continues from it exactly. */
export interface TokenLoaderState {
  version: 1;
  seed: number;
  epoch: number;
  /** Global samples (all ranks) consumed within `epoch`. */
  cursor: number;
  T: number;
  numWindows: number;
  shuffle: boolean;
}

export interface TokenBatch {
  /** Inputs (B, T). */
  x: Int32Array;
  /** Targets (B, T): x shifted left by one token. */
  y: Int32Array;
  B: number;
  T: number;
}

export class TokenLoader {
  readonly source: TokenSource;
  readonly T: number;
  readonly rank: number;
  readonly worldSize: number;
  readonly numWindows: number;
  private seed: number;
  private shuffle: boolean;
  /** Global samples consumed since epoch 0. */
  private position = 0;
  private perms = new Map<number, Uint32Array>();
  private readonly window: Int32Array;

  constructor(source: TokenSource, options: TokenLoaderOptions) {
    const { T } = options;
    this.rank = options.rank ?? 0;
    this.worldSize = options.worldSize ?? 1;
    this.seed = options.seed ?? 0;
    this.shuffle = options.shuffle ?? true;
    if (!Number.isInteger(T) || T < 1) throw new Error(`TokenLoader: option 'T' must be a positive integer, got ${T}`);
    if (!Number.isInteger(this.worldSize) || this.worldSize < 1) throw new Error(`TokenLoader: option 'worldSize' must be a positive integer, got ${this.worldSize}`);
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.worldSize) {
      throw new Error(`TokenLoader: option 'rank' ${this.rank} outside [0, worldSize=${this.worldSize})`);
    }
    if (!Number.isSafeInteger(this.seed)) throw new Error(`TokenLoader: option 'seed' must be an integer, got ${this.seed}`);
    this.source = source;
    this.T = T;
    this.numWindows = Math.max(0, Math.floor((source.numTokens - 1) / T));
    if (this.numWindows < 1) {
      throw new Error(`TokenLoader: dataset has ${source.numTokens} tokens, fewer than T+1=${T + 1} needed for one window`);
    }
    if (this.numWindows > 4294967295) throw new Error(`TokenLoader: ${this.numWindows} windows exceed 2^32-1; use a larger T`);
    this.window = new Int32Array(T + 1);
  }

  get epoch(): number { return Math.floor(this.position / this.numWindows); }

  private permutation(epoch: number): Uint32Array {
    let p = this.perms.get(epoch);
    if (!p) {
      p = this.shuffle ? seededPermutation(this.numWindows, mixSeed(this.seed, epoch)) : identity(this.numWindows);
      // Only the current epoch and the one a batch may spill into are needed.
      for (const k of this.perms.keys()) if (k < epoch - 1 || k > epoch + 1) this.perms.delete(k);
      this.perms.set(epoch, p);
    }
    return p;
  }

  /** Window index (token offset / T) of global sample s. */
  windowOf(s: number): number {
    const W = this.numWindows;
    return this.permutation(Math.floor(s / W))[s % W]!;
  }

  private fill(b: number, w: number, x: Int32Array, y: Int32Array): void {
    const T = this.T;
    const buf = this.source.readTokens(w * T, T + 1, this.window);
    x.set(buf.subarray(0, T), b * T);
    y.set(buf.subarray(1, T + 1), b * T);
  }

  /** This rank's B rows of the next global batch of B * worldSize samples. */
  next(B: number): TokenBatch {
    if (!Number.isInteger(B) || B < 1) throw new Error(`TokenLoader.next: B must be a positive integer, got ${B}`);
    const T = this.T;
    const x = new Int32Array(B * T), y = new Int32Array(B * T);
    const base = this.position + this.rank * B;
    for (let b = 0; b < B; b++) this.fill(b, this.windowOf(base + b), x, y);
    this.position += B * this.worldSize;
    return { x, y, B, T };
  }

  state(): TokenLoaderState {
    const W = this.numWindows;
    return {
      version: 1, seed: this.seed, epoch: Math.floor(this.position / W), cursor: this.position % W,
      T: this.T, numWindows: W, shuffle: this.shuffle,
    };
  }

  /** Continues from a state(); the seed and shuffle flag come from the state. */
  restore(state: TokenLoaderState): void {
    const where = 'TokenLoader.restore';
    if (state === null || typeof state !== 'object') throw new Error(`${where}: state is not an object`);
    if (state.version !== 1) throw new Error(`${where}: field 'version' is ${String(state.version)}, expected 1`);
    if (state.T !== this.T) throw new Error(`${where}: field 'T' is ${state.T}, but this loader has T=${this.T}`);
    if (state.numWindows !== this.numWindows) {
      throw new Error(`${where}: field 'numWindows' is ${state.numWindows}, but this dataset has ${this.numWindows} (different data?)`);
    }
    for (const f of ['seed', 'epoch', 'cursor'] as const) {
      if (!Number.isSafeInteger(state[f]) || (f !== 'seed' && state[f] < 0)) throw new Error(`${where}: field '${f}' is ${String(state[f])}, not a valid integer`);
    }
    if (state.cursor >= this.numWindows) throw new Error(`${where}: field 'cursor' is ${state.cursor}, not below numWindows ${this.numWindows}`);
    if (state.seed !== this.seed || state.shuffle !== this.shuffle) this.perms.clear();
    this.seed = state.seed;
    this.shuffle = state.shuffle ?? true;
    this.position = state.epoch * this.numWindows + state.cursor;
  }

  /**
   * Validation batches in stream order (no shuffle), sharded like next(): global
   * batch g gives this rank windows [g*B*world + rank*B, +B). Yields
   * floor(W / (B*world)) batches (at least one; a window count below B*world wraps
   * around), capped at maxBatches. Does not move the training position.
   */
  *evalBatches(B: number, maxBatches = Infinity): Generator<TokenBatch> {
    if (!Number.isInteger(B) || B < 1) throw new Error(`TokenLoader.evalBatches: B must be a positive integer, got ${B}`);
    const W = this.numWindows, G = B * this.worldSize, T = this.T;
    const n = Math.min(maxBatches, Math.max(1, Math.floor(W / G)));
    for (let g = 0; g < n; g++) {
      const x = new Int32Array(B * T), y = new Int32Array(B * T);
      for (let b = 0; b < B; b++) this.fill(b, (g * G + this.rank * B + b) % W, x, y);
      yield { x, y, B, T };
    }
  }
}

function identity(n: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  return p;
}
