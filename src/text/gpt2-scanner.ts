// A hand-written scanner equivalent to the GPT-2 pre-tokenizer regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (JS `u` semantics). It finds word ends by reading char codes against a
// class table, so no match objects or substrings are created; the regex stays
// the reference, and tests check the two agree on random text.

const OTHER = 0;
const LETTER = 1;
const NUMBER = 2;
const SPACE = 3;

let bmp: Uint8Array | null = null;
const astral = new Map<number, number>();
const reL = /^\p{L}$/u;
const reN = /^\p{N}$/u;
const reS = /^\s$/u;

function classify(ch: string): number {
  return reL.test(ch) ? LETTER : reN.test(ch) ? NUMBER : reS.test(ch) ? SPACE : OTHER;
}

/** Class of every BMP code unit, built once (~10 ms) on first use. */
function bmpTable(): Uint8Array {
  if (bmp !== null) return bmp;
  const t = new Uint8Array(65536);
  for (let c = 0; c < 65536; c++) {
    // Lone surrogates match [^\s\p{L}\p{N}] under the `u` flag: OTHER (0).
    if (c >= 0xd800 && c <= 0xdfff) continue;
    t[c] = classify(String.fromCharCode(c));
  }
  bmp = t;
  return t;
}

function astralClass(cp: number): number {
  let k = astral.get(cp);
  if (k === undefined) {
    k = classify(String.fromCodePoint(cp));
    astral.set(cp, k);
  }
  return k;
}

/**
 * End (exclusive) of the GPT-2 word starting at `i`, treating `end` as the end
 * of input (the regex's lookahead must not see past a segment boundary).
 */
export function gpt2WordEnd(t: string, i: number, end: number): number {
  const table = bmp ?? bmpTable();
  const c = t.charCodeAt(i);
  if (c === 0x27 && i + 1 < end) {
    const d = t.charCodeAt(i + 1);
    if (d === 0x73 || d === 0x74 || d === 0x6d || d === 0x64) return i + 2; // 's 't 'm 'd
    if (i + 2 < end) {
      const e = t.charCodeAt(i + 2);
      if ((d === 0x72 && e === 0x65) || (d === 0x76 && e === 0x65) || (d === 0x6c && e === 0x6c)) return i + 3; // 're 've 'll
    }
  }
  // Optional single leading U+0020 before a letter/number/other run.
  let j = c === 0x20 && i + 1 < end ? i + 1 : i;
  let cls = classAt(t, j, end, table);
  if (cls === SPACE && j !== i) {
    j = i;
    cls = SPACE;
  }
  if (cls !== SPACE) {
    j += width(t, j, end);
    while (j < end && classAt(t, j, end, table) === cls) j += width(t, j, end);
    return j;
  }
  // Whitespace: \s+(?!\S) takes the run minus its last char when a non-space
  // follows (that char then prefixes the next word); \s+ covers a lone one.
  let w = i + 1;
  while (w < end && table[t.charCodeAt(w)] === SPACE) w++;
  if (w === end || w - i < 2) return w;
  return w - 1;
}

function classAt(t: string, j: number, end: number, table: Uint8Array): number {
  const c = t.charCodeAt(j);
  if (c >= 0xd800 && c <= 0xdbff && j + 1 < end) {
    const d = t.charCodeAt(j + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
  }
  return table[c]!;
}

function width(t: string, j: number, end: number): number {
  const c = t.charCodeAt(j);
  if (c >= 0xd800 && c <= 0xdbff && j + 1 < end) {
    const d = t.charCodeAt(j + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return 2;
  }
  return 1;
}
