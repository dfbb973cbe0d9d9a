// koffi binding of native/checksum.c (CRC-32C). Buffers are passed as views, which
// koffi hands to C as pointers without copying.
import { nativeFamily } from './native.js';

export interface NativeChecksum {
  crc32c(crc: number, p: Uint8Array, n: number): number;
}

const bind = nativeFamily<NativeChecksum>({
  crc32c: 'uint32_t athn_crc32c(uint32_t crc, const uint8_t *p, int64_t n)',
});

/** The bound kernel, or null (no library, forced reference, or an older build without it). */
export function nativeChecksum(): NativeChecksum | null {
  return bind();
}
