/* Reference for bench/moe-bench.ts: OpenMPI's MPI_Alltoallv (float), every rank sending
 * `bytes` to every other rank, median of `reps` timed runs after a warm-up. Rank 0 prints
 * "bytes seconds" lines. Built at bench time: mpicc -O2 -o build/moe-alltoallv-mpi-peer ... */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, P;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &P);
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  for (int a = 2; a < argc; a++) {
    long bytes = atol(argv[a]);
    int n = (int)(bytes / 4);
    float *in = malloc((size_t)P * bytes + 4), *out = malloc((size_t)P * bytes + 4);
    int *cnt = malloc(sizeof(int) * P), *dis = malloc(sizeof(int) * P);
    for (int p = 0; p < P; p++) { cnt[p] = n; dis[p] = p * n; }
    for (long i = 0; i < (long)P * n; i++) in[i] = (float)(i % 13);
    double *t = malloc(sizeof(double) * reps);
    MPI_Alltoallv(in, cnt, dis, MPI_FLOAT, out, cnt, dis, MPI_FLOAT, MPI_COMM_WORLD);
    for (int k = 0; k < reps; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Alltoallv(in, cnt, dis, MPI_FLOAT, out, cnt, dis, MPI_FLOAT, MPI_COMM_WORLD);
      t[k] = MPI_Wtime() - t0;
    }
    qsort(t, reps, sizeof(double), cmp);
    if (rank == 0) { printf("%ld %.9f\n", bytes, t[reps / 2]); fflush(stdout); }
    free(t); free(in); free(out); free(cnt); free(dis);
  }
  MPI_Finalize();
  return 0;
}
