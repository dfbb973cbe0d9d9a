// Applying a ranked merge list to one word. Semantics follow HF `tokenizers`
// (Word::merge_all): repeatedly merge the applicable pair with the lowest rank,
// the leftmost one on ties, one occurrence at a time. For merge lists produced
// by BPE training this equals GPT-2's "merge every occurrence of the best
// bigram" loop; for odd hand-edited lists it still matches HF, which is the
// reference for tokenizer.json files.

/** Words longer than this use the heap path; shorter ones a plain rescan. */
const SHORT_WORD = 128;

export class MergeTable {
  /** Pair keys are `a * stride + b`; stride exceeds every token id. */
  readonly stride: number;
  private readonly rankOf: Map<number, number>;
  /** `resultOf[rank]` is the id the pair of that rank merges into. */
  private readonly resultOf: Int32Array;

  /** `pairs[r] = [a, b, merged]` (ids) for the merge of rank r. */
  constructor(pairs: ReadonlyArray<readonly [number, number, number]>, stride: number) {
    this.stride = stride;
    this.rankOf = new Map();
    this.resultOf = new Int32Array(pairs.length);
    for (let r = 0; r < pairs.length; r++) {
      const [a, b, m] = pairs[r]!;
      const key = a * stride + b;
      // A duplicated pair keeps its first (best) rank, as HF does when it builds
      // its merge map in file order.
      if (!this.rankOf.has(key)) this.rankOf.set(key, r);
      this.resultOf[r] = m;
    }
  }

  get size(): number {
    return this.resultOf.length;
  }

  /** Rank of pair (a, b), or -1 when it is not a merge. */
  rank(a: number, b: number): number {
    const r = this.rankOf.get(a * this.stride + b);
    return r === undefined ? -1 : r;
  }

  /**
   * Merges `syms[0..n)` (token ids, usually one per byte) in place and returns
   * the new length.
   */
  apply(syms: Int32Array, n: number): number {
    return n <= SHORT_WORD ? this.applyShort(syms, n) : this.applyHeap(syms, n);
  }

  private rankBuf = new Int32Array(SHORT_WORD + 1);

  /**
   * Rescans a small array of pair ranks for the minimum: O(n) per merge, but
   * only two hash lookups per merge (the new neighbours) and no allocation,
   * which beats the heap on the short words that dominate text.
   */
  applyShort(syms: Int32Array, n: number): number {
    if (n < 2) return n;
    if (this.rankBuf.length < n) this.rankBuf = new Int32Array(n);
    const ranks = this.rankBuf;
    const NONE = 0x7fffffff;
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rankOf.get(syms[i]! * this.stride + syms[i + 1]!);
      ranks[i] = r === undefined ? NONE : r;
    }
    while (n > 1) {
      let best = NONE;
      let at = -1;
      for (let i = 0; i + 1 < n; i++) {
        // Strict < keeps the leftmost of equal ranks, as HF does.
        if (ranks[i]! < best) {
          best = ranks[i]!;
          at = i;
        }
      }
      if (at < 0) break;
      syms[at] = this.resultOf[best]!;
      syms.copyWithin(at + 1, at + 2, n);
      ranks.copyWithin(at + 1, at + 2, n - 1);
      n--;
      if (at > 0) {
        const r = this.rankOf.get(syms[at - 1]! * this.stride + syms[at]!);
        ranks[at - 1] = r === undefined ? NONE : r;
      }
      if (at + 1 < n) {
        const r = this.rankOf.get(syms[at]! * this.stride + syms[at + 1]!);
        ranks[at] = r === undefined ? NONE : r;
      }
    }
    return n;
  }

  /**
   * O(n log n) for long words (a 100 kB whitespace run, a long CJK line): a
   * linked list over the symbols plus a min-heap of candidate merges keyed by
   * (rank, position). Positions never move, so stale heap entries are detected
   * by re-checking the pair that now sits at the position.
   */
  applyHeap(syms: Int32Array, n: number): number {
    if (n < 2) return n;
    const prev = new Int32Array(n);
    const next = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    // Packed key rank * 2^32 + pos keeps heap entries as plain doubles (exact
    // below 2^53 since ranks stay far below 2^21).
    const heap: number[] = [];
    const push = (k: number): void => {
      let i = heap.length;
      heap.push(k);
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p]! <= k) break;
        heap[i] = heap[p]!;
        i = p;
      }
      heap[i] = k;
    };
    const pop = (): number => {
      const top = heap[0]!;
      const last = heap.pop()!;
      const len = heap.length;
      if (len > 0) {
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          if (l >= len) break;
          const r = l + 1;
          const c = r < len && heap[r]! < heap[l]! ? r : l;
          if (heap[c]! >= last) break;
          heap[i] = heap[c]!;
          i = c;
        }
        heap[i] = last;
      }
      return top;
    };
    const TWO32 = 4294967296;
    const consider = (pos: number): void => {
      const nx = next[pos]!;
      if (nx < 0) return;
      const r = this.rank(syms[pos]!, syms[nx]!);
      if (r >= 0) push(r * TWO32 + pos);
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.length > 0) {
      const k = pop();
      const r = Math.floor(k / TWO32);
      const pos = k - r * TWO32;
      if (!alive[pos]) continue;
      const nx = next[pos]!;
      if (nx < 0 || this.rank(syms[pos]!, syms[nx]!) !== r) continue;
      syms[pos] = this.resultOf[r]!;
      alive[nx] = 0;
      const nn = next[nx]!;
      next[pos] = nn;
      if (nn >= 0) prev[nn] = pos;
      if (prev[pos]! >= 0) consider(prev[pos]!);
      consider(pos);
    }
    let w = 0;
    for (let i = 0; i >= 0; i = next[i]!) syms[w++] = syms[i]!;
    return w;
  }
}
