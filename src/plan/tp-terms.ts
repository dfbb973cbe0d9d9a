// Tensor parallelism's collectives as Athanor's trainer runs them (parallel/thread-group.ts):
// synchronous, waited for inside forward and backward by the compute thread itself, so each
// one's whole wall time is on the step's critical path, and each is a point where the tp
// ranks meet (the faster waits for the slower). On one host they run through shared memory
// (runtime/shm-collectives.ts). `athanor plan --calibrate` measures that path as the trainer
// builds it (calibrate-comm.ts, `commCpu.tpSync` in the cluster spec):
//   - wall and CPU seconds per 2-rank all-reduce at 4 KiB … 16 MiB, back to back;
//   - the ranks' skew: after equal stretches of GEMM work, the time a rank waits at the
//     collective beyond the collective's own time, as a share of that work.
// A cluster spec without the table (published clusters: GPUs, NCCL) keeps the α–β ring.
import type { ClusterSpec } from './cluster.js';
import { interpLogLog } from './comm-model.js';

export interface TpSyncTerms {
  /** Wall seconds of the collectives per micro-batch (each at its own mean size). */
  wall: number;
  /** CPU seconds a rank spends in them per micro-batch. */
  cpu: number;
  /** Seconds per micro-batch a rank waits for the other at the collectives: skew share × its compute. */
  skew: number;
}

/**
 * The tp collectives of one micro-batch on the measured synchronous path, or null where the
 * spec has no such measurement or the group leaves the node (the table is a same-host path).
 * `count` collectives of `bytes` in all; `compute`: the rank's compute seconds per micro-batch.
 */
export function tpSyncTerms(c: ClusterSpec, tp: number, intraNode: boolean, count: number, bytes: number, compute: number): TpSyncTerms | null {
  const t = c.commCpu?.tpSync;
  if (!t || tp !== 2 || !intraNode || count === 0) return null;
  const per = bytes / count;
  return { wall: count * interpLogLog(t.wall, per), cpu: count * interpLogLog(t.cpu, per), skew: t.skew.value * compute };
}
