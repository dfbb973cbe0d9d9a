// Streaming first pass of BPE training: only distinct pre-tokens and their
// counts are kept, so a corpus of any size is read once, document by
// document, and memory grows with the vocabulary of words, not with the text.
import { PreTokenizer, SpecialSplitter, type SpanSink } from './pretokenize.js';
import { SpanTable } from './span-table.js';

export class WordCounter {
  documents = 0;
  /** UTF-16 code units seen, for progress reports and benchmarks. */
  chars = 0;
  private readonly table = new SpanTable(1 << 16);
  private freq = new Float64Array(1 << 15);
  private readonly pre: PreTokenizer;
  private readonly specials: SpecialSplitter;
  private readonly bump: SpanSink = (src, s, e) => {
    const h = SpanTable.hash(src, s, e);
    let k = this.table.find(src, s, e, h);
    if (k < 0) {
      k = this.table.insert(src, s, e, h);
      if (k >= this.freq.length) {
        const bigger = new Float64Array(this.freq.length * 2);
        bigger.set(this.freq);
        this.freq = bigger;
      }
    }
    this.freq[k]! += 1;
  };
  private readonly bumpSegment: SpanSink = (src, s, e) => this.pre.forEachSpan(src, s, e, this.bump);

  constructor(pre: PreTokenizer, specialTokens: readonly string[]) {
    this.pre = pre;
    // Special-token text inside a document is cut out rather than learned, so
    // no merge ever produces a piece of "<|endoftext|>".
    this.specials = new SpecialSplitter(new Map(specialTokens.map((s, i) => [s, i])));
  }

  addDocument(text: string): void {
    this.documents++;
    this.chars += text.length;
    this.specials.forEach(text, this.bumpSegment, () => undefined);
  }

  /** Distinct words seen so far. */
  get size(): number {
    return this.table.size;
  }

  /** Word -> count, in first-seen order (which keeps training deterministic). */
  counts(): Map<string, number> {
    const m = new Map<string, number>();
    for (let k = 0; k < this.table.size; k++) m.set(this.table.key(k), this.freq[k]!);
    return m;
  }
}
