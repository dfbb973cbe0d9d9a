/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum recorded for
 * every checkpoint file. It is computed over each buffer as it is written, so its
 * speed matters: with SSE4.2 the crc32 instruction does 8 bytes per step; without it
 * a slicing-by-8 table (the same algorithm as src/backend/reference/checksum.ts). */
#include <stdint.h>
#include <string.h>
#if defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

#if !defined(__SSE4_2__)
static uint32_t table[8][256];
static int table_ready;
static void init_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
  table_ready = 1;
}
#endif

/* Continues a CRC: athn_crc32c(athn_crc32c(0, a), b) == crc of a followed by b.
 * `crc` is the finished value of the previous bytes (0 for none). */
uint32_t athn_crc32c(uint32_t crc, const uint8_t *p, int64_t n) {
  uint32_t c = ~crc;
#if defined(__SSE4_2__)
  uint64_t c64 = c;
  while (n > 0 && ((uintptr_t)p & 7)) { c64 = _mm_crc32_u8((uint32_t)c64, *p++); n--; }
  while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c64 = _mm_crc32_u64(c64, w); p += 8; n -= 8; }
  c = (uint32_t)c64;
  while (n > 0) { c = _mm_crc32_u8(c, *p++); n--; }
#else
  if (!table_ready) init_table();
  while (n >= 8) {
    uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    c = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^ table[4][lo >> 24] ^
        table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^ table[0][p[7]];
    p += 8; n -= 8;
  }
  while (n > 0) { c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF]; n--; }
#endif
  return ~c;
}
