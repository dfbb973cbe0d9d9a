// CRC-32C (Castagnoli), the TypeScript reference of native/checksum.c: the fallback
// without the native library and the oracle it is tested against. Slicing-by-8 over
// a reflected table; `crc` continues a previous finished value (0 for none).
const POLY = 0x82f63b78;

const TABLE: Uint32Array[] = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (POLY & -(c & 1));
    t[0]![i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s]![i] = (t[s - 1]![i]! >>> 8) ^ t[0]![t[s - 1]![i]! & 0xff]!;
  }
  return t;
})();

export function crc32cReference(crc: number, p: Uint8Array): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLE as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array];
  let c = ~crc >>> 0;
  let i = 0;
  const n = p.length;
  for (; i + 8 <= n; i += 8) {
    const lo = (c ^ (p[i]! | (p[i + 1]! << 8) | (p[i + 2]! << 16) | (p[i + 3]! << 24))) >>> 0;
    c = t7[lo & 0xff]! ^ t6[(lo >>> 8) & 0xff]! ^ t5[(lo >>> 16) & 0xff]! ^ t4[lo >>> 24]! ^
      t3[p[i + 4]!]! ^ t2[p[i + 5]!]! ^ t1[p[i + 6]!]! ^ t0[p[i + 7]!]!;
  }
  for (; i < n; i++) c = (c >>> 8) ^ t0[(c ^ p[i]!) & 0xff]!;
  return ~c >>> 0;
}
