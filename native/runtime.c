/* Runtime knobs shared by every kernel file: version and thread count.
 * Kernels parallelise with OpenMP only above a size threshold, so small ops stay
 * single-threaded and never pay a fork/join. Without OpenMP the pragmas vanish. */
#ifdef _OPENMP
#include <omp.h>
#endif

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
