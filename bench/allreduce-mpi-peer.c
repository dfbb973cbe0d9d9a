/* Reference for bench/allreduce-bench.ts: OpenMPI's own MPI_Allreduce (float, sum, in place),
 * median of `reps` timed runs per size after a warm-up. Rank 0 prints "bytes seconds" lines.
 * Built at bench time: mpicc -O2 -o build/allreduce-mpi-peer bench/allreduce-mpi-peer.c */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int reps = argc > 1 ? atoi(argv[1]) : 5;
  for (int a = 2; a < argc; a++) {
    long bytes = atol(argv[a]);
    long n = bytes / 4;
    float *buf = malloc(bytes > 0 ? bytes : 4);
    for (long i = 0; i < n; i++) buf[i] = (float)(i % 17);
    int r = bytes <= (1 << 20) ? reps * 10 : reps;
    double *t = malloc(sizeof(double) * r);
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    for (int k = 0; k < r; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      t[k] = MPI_Wtime() - t0;
    }
    qsort(t, r, sizeof(double), cmp);
    if (rank == 0) { printf("%ld %.9f\n", bytes, t[r / 2]); fflush(stdout); }
    free(t);
    free(buf);
  }
  MPI_Finalize();
  return 0;
}
