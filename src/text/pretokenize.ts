// Pre-tokenization: split text into "words" that BPE never merges across.
// The GPT-2 pattern keeps a leading space attached to the following word, so
// " the" and "the" are different tokens, and a run of letters in any script
// (a whole line of CJK, say) is one word; BPE then merges inside its bytes.
//
// Words are reported as spans (src, start, end) rather than substrings so the
// hot paths (counting, encoding) can hash them in place.
import { gpt2WordEnd } from './gpt2-scanner.js';

/** GPT-2 / HF ByteLevel(use_regex=true) pattern. JS `u` flag gives \p{..}. */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

export type SpanSink = (src: string, start: number, end: number) => void;

export interface PreTokenizerOptions {
  /** Regex source; null means no splitting (the whole segment is one word). */
  pattern?: string | null;
  /** HF ByteLevel `add_prefix_space`: prepend ' ' unless the segment starts with one. */
  addPrefixSpace?: boolean;
  /** Use the RegExp even for the GPT-2 pattern (the reference for tests). */
  forceRegex?: boolean;
}

export class PreTokenizer {
  readonly pattern: string | null;
  readonly addPrefixSpace: boolean;
  private readonly re: RegExp | null;
  private readonly scanner: boolean;

  constructor(opts: PreTokenizerOptions = {}) {
    this.pattern = opts.pattern === undefined ? GPT2_PATTERN : opts.pattern;
    this.addPrefixSpace = opts.addPrefixSpace ?? false;
    this.re = this.pattern === null ? null : new RegExp(this.pattern, 'gu');
    this.scanner = this.pattern === GPT2_PATTERN && !opts.forceRegex;
  }

  /**
   * Reports every word of text[start..end) in order; the words tile the range
   * exactly. Text the pattern skips is reported as its own word so no input is
   * ever dropped (the GPT-2 pattern skips nothing; a loaded pattern might).
   */
  forEachSpan(text: string, start: number, end: number, emit: SpanSink): void {
    if (start >= end) return;
    if (this.addPrefixSpace && text.charCodeAt(start) !== 0x20) {
      const seg = ' ' + text.slice(start, end);
      this.spansNoPrefix(seg, 0, seg.length, emit);
    } else {
      this.spansNoPrefix(text, start, end, emit);
    }
  }

  private spansNoPrefix(text: string, start: number, end: number, emit: SpanSink): void {
    if (this.scanner) {
      for (let i = start; i < end; ) {
        const j = gpt2WordEnd(text, i, end);
        emit(text, i, j);
        i = j;
      }
      return;
    }
    const re = this.re;
    if (re === null) {
      emit(text, start, end);
      return;
    }
    // The regex must see the segment as the whole input (lookaheads, `^`).
    const seg = start === 0 && end === text.length ? text : text.slice(start, end);
    re.lastIndex = 0;
    let pos = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(seg)) !== null) {
      const len = m[0].length;
      if (len === 0) {
        // An empty match would loop forever; step over one code point.
        const c = seg.codePointAt(re.lastIndex);
        re.lastIndex += c !== undefined && c > 0xffff ? 2 : 1;
        continue;
      }
      if (m.index > pos) emit(seg, pos, m.index);
      emit(seg, m.index, m.index + len);
      pos = m.index + len;
    }
    if (pos < seg.length) emit(seg, pos, seg.length);
  }

  forEach(text: string, emit: (word: string) => void): void {
    this.forEachSpan(text, 0, text.length, (src, s, e) => emit(src.slice(s, e)));
  }

  split(text: string): string[] {
    const out: string[] = [];
    this.forEach(text, (w) => out.push(w));
    return out;
  }
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Splits text on special-token strings. Longest strings are tried first so a
 * special token that is a prefix of another never wins wrongly.
 */
export class SpecialSplitter {
  private readonly re: RegExp | null;
  private readonly ids: Map<string, number>;

  constructor(specials: Map<string, number>) {
    this.ids = specials;
    const keys = [...specials.keys()].filter((k) => k.length > 0).sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    this.re = keys.length === 0 ? null : new RegExp(keys.map(escapeRegex).join('|'), 'g');
  }

  /** `onText` gets each stretch of ordinary text as a span, `onSpecial` each match's id. */
  forEach(text: string, onText: SpanSink, onSpecial: (id: number) => void): void {
    const re = this.re;
    if (re === null) {
      if (text.length > 0) onText(text, 0, text.length);
      return;
    }
    re.lastIndex = 0;
    let pos = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(text)) !== null) {
      if (m.index > pos) onText(text, pos, m.index);
      onSpecial(this.ids.get(m[0])!);
      pos = m.index + m[0].length;
    }
    if (pos < text.length) onText(text, pos, text.length);
  }
}
