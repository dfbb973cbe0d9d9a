// GPT-2's byte <-> unicode table. Byte-level BPE vocabularies (GPT-2, RoBERTa,
// HF `ByteLevel`) store tokens as strings in which every raw byte is replaced by
// one printable code point, so that vocab/merges files stay valid JSON and
// whitespace-free ("Ġ" is the space byte). Any file we load or write must use
// exactly this table, otherwise token strings would not line up with HF's.

function buildByteToChar(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const isPrintable = new Uint8Array(256);
  for (const b of printable) isPrintable[b] = 1;
  const out = new Array<string>(256);
  // Printable bytes map to themselves; the rest are shifted past 255 in
  // ascending byte order, which is what makes the table identical to GPT-2's.
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCharCode(isPrintable[b] ? b : 256 + n++);
  }
  return out;
}

/** `BYTE_TO_CHAR[b]` is the one-character string standing for byte `b`. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Inverse of BYTE_TO_CHAR, keyed by UTF-16 code unit (all entries are < 0x200). */
const CHAR_TO_BYTE = new Int16Array(0x200).fill(-1);
for (let b = 0; b < 256; b++) CHAR_TO_BYTE[BYTE_TO_CHAR[b]!.charCodeAt(0)] = b;

/** Byte-level string for raw bytes (what vocab.json / tokenizer.json store). */
export function bytesToTokenString(bytes: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]!]!;
  return s;
}

/**
 * Raw bytes of a byte-level token string, or null when the string contains a
 * character outside the table (such a token cannot come from byte-level BPE;
 * callers treat it as an added token whose text is its UTF-8 content).
 */
export function tokenStringToBytes(s: string): Uint8Array | null {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const b = c < 0x200 ? CHAR_TO_BYTE[c]! : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}
