// Small deterministic PRNG for data order: xoshiro128** seeded through
// splitmix32, so (seed, epoch) pairs give independent, reproducible streams on
// every rank and every run. Kept inside src/data so the data pipeline's order
// never changes when other parts of the framework change their RNG.

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** Mixes any number of 32-bit words (e.g. seed, epoch) into one 32-bit seed. */
export function mixSeed(...words: number[]): number {
  let h = 0x243f6a88;
  for (const w of words) {
    // Fold values above 2^32 (large seeds, epochs) in as two words.
    const lo = w >>> 0, hi = Math.floor(w / 4294967296) >>> 0;
    for (const v of [lo, hi]) {
      h = Math.imul(h ^ v, 0x9e3779b1);
      h ^= h >>> 15;
      h = Math.imul(h, 0x85ebca77);
      h ^= h >>> 13;
    }
  }
  return h >>> 0;
}

export class SeededRng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    const st = { s: seed | 0 };
    this.a = splitmix32(st); this.b = splitmix32(st); this.c = splitmix32(st); this.d = splitmix32(st);
    if ((this.a | this.b | this.c | this.d) === 0) this.a = 1;
  }

  /** Uniform uint32. */
  nextUint32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a; this.d ^= this.b; this.b ^= this.c; this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  nextFloat(): number { return this.nextUint32() / 4294967296; }

  /** Uniform integer in [0, n), n <= 2^32, without modulo bias. */
  nextInt(n: number): number {
    if (!(n > 0 && n <= 4294967296)) throw new Error(`SeededRng.nextInt: n=${n} outside (0, 2^32]`);
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return r % n;
    }
  }
}

function rotl(x: number, k: number): number { return (x << k) | (x >>> (32 - k)); }

/** Fisher-Yates permutation of [0, n) drawn from rng. */
export function seededPermutation(n: number, seed: number): Uint32Array {
  if (n > 4294967295) throw new Error(`seededPermutation: n=${n} exceeds 2^32-1`);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = new SeededRng(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = p[i]!; p[i] = p[j]!; p[j] = t;
  }
  return p;
}

/** FNV-1a over the UTF-16 code units of `text`, seeded, with a murmur3 finaliser so every bit is usable. */
export function hashText(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ mixSeed(seed)) >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
