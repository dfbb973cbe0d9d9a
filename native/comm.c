/* Reduction loops and the same-host single-copy read for the collectives in src/dist/ (bound by
 * src/dist/native-reduce.ts). Results must equal the TypeScript fallback in
 * src/dist/reduce-kernels.ts bit for bit, so:
 *  - float32 sum is a plain float add (the JS double add rounded to float32 is the same:
 *    double rounding through a >= 2p+2-bit format is innocuous);
 *  - avg divides in double and rounds once, like `(x + y) / divisor` in JS;
 *  - max keeps NaNs from the first operand (`p > q || p !== p ? p : q`);
 *  - bfloat16 widens to float32, combines in float32 and rounds to nearest-even.
 * Single-threaded on purpose: every rank of a same-host job runs these at once and
 * the socket work needs the other cores. No allocation. */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/types.h>
#include <sys/uio.h>

enum { OP_SUM = 0, OP_MAX = 1 };

static inline uint32_t c_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float c_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline float c_bf(uint16_t h) { return c_u2f((uint32_t)h << 16); }
static inline uint16_t c_to_bf(float f) {
  const uint32_t u = c_f2u(f);
  return (u & 0x7fffffffu) > 0x7f800000u ? (uint16_t)((u >> 16) | 0x40u) : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float c_max(float p, float q) { return (p > q || p != p) ? p : q; }

/* out[i] = a[i] op b[i] (then / divisor when divisor != 1); out may alias a or b. */
void athn_comm_combine_f32(int op, int64_t n, float *out, const float *a, const float *b, double divisor) {
  if (op == OP_MAX) { for (int64_t i = 0; i < n; i++) out[i] = c_max(a[i], b[i]); return; }
  if (divisor == 1.0) { for (int64_t i = 0; i < n; i++) out[i] = a[i] + b[i]; return; }
  for (int64_t i = 0; i < n; i++) out[i] = (float)(((double)a[i] + (double)b[i]) / divisor);
}

void athn_comm_combine_bf16(int op, int64_t n, uint16_t *out, const uint16_t *a, const uint16_t *b, double divisor) {
  if (op == OP_MAX) { for (int64_t i = 0; i < n; i++) out[i] = c_to_bf(c_max(c_bf(a[i]), c_bf(b[i]))); return; }
  if (divisor == 1.0) { for (int64_t i = 0; i < n; i++) out[i] = c_to_bf(c_bf(a[i]) + c_bf(b[i])); return; }
  for (int64_t i = 0; i < n; i++) out[i] = c_to_bf((float)(((double)c_bf(a[i]) + (double)c_bf(b[i])) / divisor));
}

void athn_comm_div_f32(int64_t n, float *x, double divisor) {
  for (int64_t i = 0; i < n; i++) x[i] = (float)((double)x[i] / divisor);
}

void athn_comm_div_bf16(int64_t n, uint16_t *x, double divisor) {
  for (int64_t i = 0; i < n; i++) x[i] = c_to_bf((float)((double)c_bf(x[i]) / divisor));
}

/* float32 accumulator for bfloat16 inputs: acc = h widened (first) or acc op h. */
void athn_comm_acc_bf16(int op, int first, int64_t n, float *acc, const uint16_t *h) {
  if (first) { for (int64_t i = 0; i < n; i++) acc[i] = c_bf(h[i]); return; }
  if (op == OP_MAX) { for (int64_t i = 0; i < n; i++) acc[i] = c_max(acc[i], c_bf(h[i])); return; }
  for (int64_t i = 0; i < n; i++) acc[i] = acc[i] + c_bf(h[i]);
}

void athn_comm_round_bf16(int64_t n, const float *x, uint16_t *out) {
  for (int64_t i = 0; i < n; i++) out[i] = c_to_bf(x[i]);
}

/* Address of a buffer as koffi passes it (typed arrays cross as a pointer to their first
 * element), for the single-copy same-host path. */
uint64_t athn_comm_addr(const void *p) { return (uint64_t)(uintptr_t)p; }

/* Copies n bytes from another process's memory (Linux cross-memory attach, one copy
 * instead of the two a socket makes). Returns bytes read or -errno. */
int64_t athn_comm_vm_read(int pid, void *local, uint64_t remote, int64_t n) {
  int64_t done = 0;
  while (done < n) {
    struct iovec l = { (char *)local + done, (size_t)(n - done) };
    struct iovec r = { (void *)(uintptr_t)(remote + (uint64_t)done), (size_t)(n - done) };
    const ssize_t got = process_vm_readv(pid, &l, 1, &r, 1, 0);
    if (got < 0) { if (errno == EINTR) continue; return -errno; }
    if (got == 0) return -EFAULT;
    done += got;
  }
  return done;
}
