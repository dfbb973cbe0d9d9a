// Byte-level BPE training over a word-frequency table, in the manner of HF
// `tokenizers`' BpeTrainer: pair counts are kept incrementally and each merge
// only revisits the words that contain the merged pair, so the cost of a
// merge is proportional to how often it occurs, not to the corpus size.
import { BYTE_TO_CHAR } from './byte-level.js';

export interface BpeTrainResult {
  /** Byte-level token strings by id; ids 0..255 are the single bytes. */
  tokens: string[];
  /** Merges in rank order, as token ids `[left, right]`. */
  merges: Array<[number, number]>;
}

/** Max-heap over pair slots by (count desc, left id asc, right id asc). */
class PairHeap {
  private slots: number[] = [];
  private counts: number[] = [];
  constructor(private readonly left: number[], private readonly right: number[]) {}

  get size(): number {
    return this.slots.length;
  }

  private above(s1: number, c1: number, s2: number, c2: number): boolean {
    if (c1 !== c2) return c1 > c2;
    const l1 = this.left[s1]!, l2 = this.left[s2]!;
    // Deterministic ties: the smaller pair of ids wins, as in HF.
    if (l1 !== l2) return l1 < l2;
    return this.right[s1]! < this.right[s2]!;
  }

  push(slot: number, count: number): void {
    const { slots, counts } = this;
    let i = slots.length;
    slots.push(slot);
    counts.push(count);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(slot, count, slots[p]!, counts[p]!)) break;
      slots[i] = slots[p]!;
      counts[i] = counts[p]!;
      i = p;
    }
    slots[i] = slot;
    counts[i] = count;
  }

  /** Removes the top; returns its slot and writes its stored count to out[0]. */
  pop(out: number[]): number {
    const { slots, counts } = this;
    const top = slots[0]!;
    out[0] = counts[0]!;
    const ls = slots.pop()!;
    const lc = counts.pop()!;
    const n = slots.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && this.above(slots[r]!, counts[r]!, slots[l]!, counts[l]!) ? r : l;
        if (!this.above(slots[c]!, counts[c]!, ls, lc)) break;
        slots[i] = slots[c]!;
        counts[i] = counts[c]!;
        i = c;
      }
      slots[i] = ls;
      counts[i] = lc;
    }
    return top;
  }
}

/**
 * Learns merges until there are `targetTokens` distinct tokens (256 bytes
 * included) or no pair occurs at least `minFrequency` times.
 */
export function trainBpe(
  wordCounts: ReadonlyMap<string, number>,
  targetTokens: number,
  minFrequency: number,
): BpeTrainResult {
  const tokens: string[] = BYTE_TO_CHAR.slice();
  const tokenId = new Map<string, number>();
  for (let b = 0; b < 256; b++) tokenId.set(tokens[b]!, b);
  const merges: Array<[number, number]> = [];
  if (targetTokens <= 256) return { tokens, merges };

  // Words as arrays of symbol ids; bytes are ids 0..255.
  const words: Int32Array[] = [];
  const freq: number[] = [];
  const encoder = new TextEncoder();
  for (const [w, c] of wordCounts) {
    const bytes = encoder.encode(w);
    if (bytes.length < 2) continue; // a single byte has no pair to learn from
    words.push(Int32Array.from(bytes));
    freq.push(c);
  }

  // Every id ever created is < targetTokens, so this keeps keys unique; with
  // vocabularies below ~46k the keys also stay small integers, which Map hashes fastest.
  const stride = targetTokens;
  const slotOf = new Map<number, number>();
  const left: number[] = [];
  const right: number[] = [];
  const count: number[] = [];
  // Words that contained the pair when it was last incremented. May hold stale
  // entries (a later merge consumed the pair); merging re-scans the word, so a
  // stale entry just finds nothing.
  const where: number[][] = [];

  const slotFor = (a: number, b: number): number => {
    const key = a * stride + b;
    let s = slotOf.get(key);
    if (s === undefined) {
      s = left.length;
      slotOf.set(key, s);
      left.push(a);
      right.push(b);
      count.push(0);
      where.push([]);
    }
    return s;
  };

  for (let w = 0; w < words.length; w++) {
    const syms = words[w]!;
    const f = freq[w]!;
    for (let i = 0; i + 1 < syms.length; i++) {
      const s = slotFor(syms[i]!, syms[i + 1]!);
      count[s]! += f;
      const list = where[s]!;
      if (list.length === 0 || list[list.length - 1] !== w) list.push(w);
    }
  }

  const heap = new PairHeap(left, right);
  for (let s = 0; s < left.length; s++) if (count[s]! > 0) heap.push(s, count[s]!);

  const seen = new Int32Array(words.length).fill(-1);
  let touched = new Int32Array(Math.max(1024, left.length));
  touched.fill(-1);
  const grown: number[] = [];
  let scratch = new Int32Array(64);
  const popped = [0];

  let mergeIndex = 0;
  while (tokens.length < targetTokens && heap.size > 0) {
    const s = heap.pop(popped);
    const c = count[s]!;
    if (c <= 0) continue; // already merged, or created and consumed again
    if (c !== popped[0]) {
      // Stale entry: an existing pair's count only drops, and every rise was
      // pushed with its new count, so re-queue at the true count and look again.
      heap.push(s, c);
      continue;
    }
    if (c < minFrequency) break;
    const a = left[s]!;
    const b = right[s]!;
    const str = tokens[a]! + tokens[b]!;
    // Two merge paths can spell the same string ("ab"+"c", "a"+"bc"); they share
    // one id, as in HF, so the vocabulary has no duplicate strings.
    let x = tokenId.get(str);
    if (x === undefined) {
      x = tokens.length;
      tokens.push(str);
      tokenId.set(str, x);
    }
    merges.push([a, b]);

    const list = where[s]!;
    where[s] = [];
    grown.length = 0;
    for (let li = 0; li < list.length; li++) {
      const w = list[li]!;
      if (seen[w] === mergeIndex) continue;
      seen[w] = mergeIndex;
      const syms = words[w]!;
      const n = syms.length;
      if (scratch.length < n) scratch = new Int32Array(n * 2);
      const f = freq[w]!;
      let out = 0;
      let hit = false;
      for (let i = 0; i < n; ) {
        if (i + 1 < n && syms[i] === a && syms[i + 1] === b) {
          hit = true;
          count[s]! -= f;
          // The left neighbour is read from the output, so when it is an x made
          // by the previous occurrence, the (x, a) pair added there is undone.
          if (out > 0) {
            const p = scratch[out - 1]!;
            count[slotFor(p, a)]! -= f;
            const t = slotFor(p, x);
            count[t]! += f;
            noteGrown(t, w);
          }
          if (i + 2 < n) {
            const q = syms[i + 2]!;
            count[slotFor(b, q)]! -= f;
            const t = slotFor(x, q);
            count[t]! += f;
            noteGrown(t, w);
          }
          scratch[out++] = x;
          i += 2;
        } else {
          scratch[out++] = syms[i++]!;
        }
      }
      if (hit) words[w] = scratch.slice(0, out);
    }
    for (const t of grown) if (count[t]! > 0) heap.push(t, count[t]!);
    mergeIndex++;
  }
  return { tokens, merges };

  function noteGrown(t: number, w: number): void {
    const list = where[t]!;
    if (list.length === 0 || list[list.length - 1] !== w) list.push(w);
    if (t >= touched.length) {
      const bigger = new Int32Array(Math.max(t + 1, touched.length * 2)).fill(-1);
      bigger.set(touched);
      touched = bigger;
    }
    if (touched[t] !== mergeIndex) {
      touched[t] = mergeIndex;
      grown.push(t);
    }
  }
}
