/* Runtime knobs shared by every kernel file: version and thread count.
 * Kernels parallelise with OpenMP only above a size threshold, so small ops stay
 * single-threaded and never pay a fork/join. Without OpenMP the pragmas vanish. */
#define _GNU_SOURCE
#include <dlfcn.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* koffi dlclose()s this library when node exits; if an OpenMP worker is still
 * spinning in libgomp at that moment, unmapping libgomp crashes the process
 * (SIGSEGV at exit, seen in about half of short runs). Pinning this library and
 * libgomp with RTLD_NODELETE keeps their code mapped until the process is gone
 * (the build also links with -z nodelete). */
__attribute__((constructor)) static void athn_pin_library(void) {
  Dl_info info;
  if (dladdr((void *)&athn_pin_library, &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
#ifdef _OPENMP
  dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
#endif
}

int athn_version(void) { return 1; }

int athn_has_openmp(void) {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

void athn_set_num_threads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

int athn_get_num_threads(void) {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
