// oneDNN matmul primitives for Athanor (built into build/libathanor_dnnl.so, linked
// with -ldnnl, only when dnnl.h is present). TypeScript owns the cache of primitives
// (by shape, transposes, leading dimensions, dtypes, alpha, beta) and calls
// athn_dnnl_mm_exec with the three pointers, so a GEMM costs one FFI crossing and no
// primitive creation after the first use of a shape.
//
// C[m x n] (fp32, ldc) = alpha * op(A)[m x k] * op(B)[k x n] + beta * C, row-major;
// A and B are fp32, bf16 or f16 (same type), accumulation is fp32 inside oneDNN.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <dnnl.h>

typedef struct {
  dnnl_primitive_t prim;
  dnnl_memory_t a, b, c;
  char impl[64];
} athn_mm;

static dnnl_engine_t engine;
static dnnl_stream_t stream;

static int ensure_engine(void) {
  if (engine) return 0;
  if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return -1;
  if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) return -1;
  return 0;
}

static dnnl_data_type_t dt_of(int code) {
  return code == 1 ? dnnl_bf16 : code == 2 ? dnnl_f16 : dnnl_f32;
}

/** 0 = f32, 1 = bf16, 2 = f16 inputs. Returns NULL when oneDNN has no implementation. */
void *athn_dnnl_mm_create(int in_dt, int ta, int tb, int64_t m, int64_t n, int64_t k,
                          int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta) {
  if (ensure_engine()) return NULL;
  dnnl_data_type_t dt = dt_of(in_dt);
  dnnl_memory_desc_t amd, bmd, cmd;
  dnnl_dims_t ad = {m, k}, bd = {k, n}, cd = {m, n};
  dnnl_dims_t as = {ta ? 1 : lda, ta ? lda : 1};
  dnnl_dims_t bs = {tb ? 1 : ldb, tb ? ldb : 1};
  dnnl_dims_t cs = {ldc, 1};
  if (dnnl_memory_desc_init_by_strides(&amd, 2, ad, dt, as) != dnnl_success) return NULL;
  if (dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dt, bs) != dnnl_success) return NULL;
  if (dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs) != dnnl_success) return NULL;
  dnnl_matmul_desc_t desc;
  if (dnnl_matmul_desc_init(&desc, &amd, &bmd, NULL, &cmd) != dnnl_success) return NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_attr_create(&attr);
  if (alpha != 1.0f) dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
  if (beta != 0.0f) {
    dnnl_post_ops_create(&po);
    dnnl_post_ops_append_sum(po, beta);
    dnnl_primitive_attr_set_post_ops(attr, po);
  }
  dnnl_primitive_desc_t pd = NULL;
  dnnl_status_t st = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  if (st != dnnl_success) return NULL;
  athn_mm *h = (athn_mm *)calloc(1, sizeof(athn_mm));
  const char *impl = NULL;
  dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
  if (impl) strncpy(h->impl, impl, sizeof(h->impl) - 1);
  st = dnnl_primitive_create(&h->prim, pd);
  dnnl_primitive_desc_destroy(pd);
  if (st != dnnl_success) { free(h); return NULL; }
  dnnl_memory_create(&h->a, &amd, engine, DNNL_MEMORY_NONE);
  dnnl_memory_create(&h->b, &bmd, engine, DNNL_MEMORY_NONE);
  dnnl_memory_create(&h->c, &cmd, engine, DNNL_MEMORY_NONE);
  return h;
}

/** oneDNN's implementation name of a primitive ("brg:avx512_core_bf16", "gemm:jit", "ref:any", ...). */
const char *athn_dnnl_mm_impl(void *hv) {
  return hv ? ((athn_mm *)hv)->impl : "";
}

/** Runs the primitive on A, B (element offsets already applied by the caller) into C. */
int athn_dnnl_mm_exec(void *hv, const void *a, const void *b, float *c) {
  athn_mm *h = (athn_mm *)hv;
  dnnl_memory_set_data_handle(h->a, (void *)a);
  dnnl_memory_set_data_handle(h->b, (void *)b);
  dnnl_memory_set_data_handle(h->c, c);
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, h->a}, {DNNL_ARG_WEIGHTS, h->b}, {DNNL_ARG_DST, h->c}};
  if (dnnl_primitive_execute(h->prim, stream, 3, args) != dnnl_success) return -1;
  return dnnl_stream_wait(stream) == dnnl_success ? 0 : -1;
}

void athn_dnnl_mm_destroy(void *hv) {
  athn_mm *h = (athn_mm *)hv;
  if (!h) return;
  dnnl_memory_destroy(h->a);
  dnnl_memory_destroy(h->b);
  dnnl_memory_destroy(h->c);
  dnnl_primitive_destroy(h->prim);
  free(h);
}

/** oneDNN's CPU ISA as it detected it (dnnl_cpu_isa_t bits; see dnnl_types.h). */
int athn_dnnl_cpu_isa(void) {
  return (int)dnnl_get_effective_cpu_isa();
}

int athn_dnnl_version(void) {
  const dnnl_version_t *v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
