// Shared generators for the text tests: deterministic random strings and a
// small mixed-language corpus, so failures reproduce exactly.

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const POOLS: Array<[number, number]> = [
  [0x20, 0x7e], // ASCII
  [0xa0, 0xff], // Latin-1 incl. NBSP, soft hyphen
  [0x300, 0x36f], // combining marks
  [0x4e00, 0x9fff], // CJK
  [0xac00, 0xd7a3], // Hangul
  [0x3000, 0x303f], // CJK punctuation, ideographic space
  [0x1f300, 0x1faff], // emoji
  [0x20000, 0x2a6df], // CJK extension B (astral letters)
  [0x0660, 0x0669], // Arabic-Indic digits
];
const SPACES = [' ', ' ', ' ', '\n', '\t', '\r\n', '\u3000', '\u00a0', '\u2028', '\ufeff', '  ', '\n\n'];
const PIECES = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "''", ' the', ' 123', '<|endoftext|>', '<|endoftext', '你好', '👍🏽', 'e\u0301'];

/** A random valid (surrogate-free except as pairs) string of about `n` code points. */
export function randomText(r: () => number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) {
    const x = r();
    if (x < 0.15) s += SPACES[Math.floor(r() * SPACES.length)];
    else if (x < 0.25) s += PIECES[Math.floor(r() * PIECES.length)];
    else if (x < 0.3) {
      // Any scalar value at all, surrogates excluded.
      let cp = Math.floor(r() * 0x110000);
      if (cp >= 0xd800 && cp <= 0xdfff) cp -= 0x800;
      s += String.fromCodePoint(cp);
    } else {
      const [lo, hi] = POOLS[Math.floor(r() * POOLS.length)]!;
      s += String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)));
    }
  }
  return s;
}

const WORDS = ['the', 'of', 'and', 'to', 'in', 'is', 'that', 'it', 'was', 'for', 'on', 'are', 'with', 'they', 'be',
  'at', 'one', 'have', 'this', 'from', 'tokenizer', 'training', 'network', 'gradient', 'tensor', "don't", "it's", "we're"];
const HANZI = ['我们', '你好', '世界', '学习', '神经', '网络', '训练', '数据', '模型', '的', '是', '在', '了', '和'];

/** Documents mixing English-like sentences, numbers and Chinese. */
export function corpus(docs: number, seed = 1): string[] {
  const r = rng(seed);
  const out: string[] = [];
  for (let d = 0; d < docs; d++) {
    let s = '';
    const n = 20 + Math.floor(r() * 60);
    for (let i = 0; i < n; i++) {
      const x = r();
      if (x < 0.7) s += (i === 0 ? '' : ' ') + WORDS[Math.floor(r() * WORDS.length)];
      else if (x < 0.8) s += ' ' + Math.floor(r() * 10000);
      else if (x < 0.95) s += HANZI[Math.floor(r() * HANZI.length)];
      else s += r() < 0.5 ? '.\n' : '，';
    }
    out.push(s);
  }
  return out;
}
