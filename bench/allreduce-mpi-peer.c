/* Reference for bench/allreduce-bench.ts: OpenMPI's own MPI_Allreduce (float, sum, in place),
 * median of `reps` timed runs per size after a warm-up. Rank 0 prints "bytes seconds" lines.
 * An argument "p2p=BYTES" also times MPI_Send/MPI_Recv between ranks 0 and 1: one-way BYTES
 * ("p2p BYTES seconds") and a 4 KiB ping-pong ("pingpong 4096 half-round-trip-seconds").
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
  long p2p = 0;
  for (int a = 2; a < argc; a++) {
    if (strncmp(argv[a], "p2p=", 4) == 0) { p2p = atol(argv[a] + 4); continue; }
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
  if (p2p > 0) {
    float *buf = calloc(p2p / 4 > 1024 ? p2p / 4 : 1024, 4);
    int r = reps * 20 + 20;
    double *t = malloc(sizeof(double) * (r > reps + 1 ? r : reps + 1));
    for (int k = 0; k <= reps; k++) {
      MPI_Barrier(MPI_COMM_WORLD);
      double t0 = MPI_Wtime();
      if (rank == 0) MPI_Send(buf, (int)(p2p / 4), MPI_FLOAT, 1, 0, MPI_COMM_WORLD);
      else if (rank == 1) MPI_Recv(buf, (int)(p2p / 4), MPI_FLOAT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Barrier(MPI_COMM_WORLD);
      if (k > 0) t[k - 1] = MPI_Wtime() - t0;
    }
    qsort(t, reps, sizeof(double), cmp);
    if (rank == 0) printf("p2p %ld %.9f\n", p2p, t[reps / 2]);
    for (int k = 0; k < r; k++) {
      double t0 = MPI_Wtime();
      if (rank == 0) { MPI_Send(buf, 1024, MPI_FLOAT, 1, 3, MPI_COMM_WORLD); MPI_Recv(buf, 1024, MPI_FLOAT, 1, 4, MPI_COMM_WORLD, MPI_STATUS_IGNORE); }
      else if (rank == 1) { MPI_Recv(buf, 1024, MPI_FLOAT, 0, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE); MPI_Send(buf, 1024, MPI_FLOAT, 0, 4, MPI_COMM_WORLD); }
      t[k] = (MPI_Wtime() - t0) / 2;
    }
    qsort(t + 20, r - 20, sizeof(double), cmp);
    if (rank == 0) printf("pingpong 4096 %.9f\n", t[20 + (r - 20) / 2]);
    fflush(stdout);
    free(t);
    free(buf);
  }
  MPI_Finalize();
  return 0;
}
