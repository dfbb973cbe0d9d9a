// Run by `athanor plan --calibrate` under the launcher with 2 ranks: times all-reduce
// at a small and a large size so the α–β model of this machine's link is measured:
// the wall time on the runtime's own process group, and the CPU time a rank spends per
// collective on the path the trainer's asynchronous collectives take from synchronous code
// (expert exchanges, pipeline messages: a communication thread fed through shared staging
// buffers and waited for with Atomics.wait, parallel/thread-group.ts with the thread path),
// all threads of the process. Then the tensor-parallel path (src/plan/tp-terms.ts): the
// same ThreadGroup as the trainer builds it (shared memory on one host), its wall and CPU
// time per all-reduce back to back, and the ranks' skew at a synchronous collective after
// a fixed stretch of GEMM work, as a share of that work. Then expert parallelism's exchange
// (src/plan/ep-terms.ts): the same synchronous all-to-all-v as the trainer runs it
// (parallel/expert-parallel-comm.ts, on its own communication thread, shared staging), its
// wall and CPU time per exchange and the ranks' skew at it, measured the same way.
import { initProcessGroup } from '../runtime/init.js';
import { CommThread } from '../runtime/comm-thread.js';
import { ThreadGroup } from '../parallel/thread-group.js';
import { gemm, setBlasThreads } from '../backend/blas.js';
import { ThreadEpComm } from '../parallel/expert-parallel-comm.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const SIZES = [['small', 4096, 200], ['large', 16 * 2 ** 20, 8]] as const;
// 64 KiB and 1 MiB as well: a collective's CPU cost is not linear in between (the size of
// tensor-parallel activations and expert exchanges), so the planner interpolates a table.
const TABLE = [...SIZES, ['mid', 2 ** 16, 60], ['mib', 2 ** 20, 30]] as const;

/** Mean [wall, CPU] seconds per all-reduce of each TABLE size, back to back as a step issues them. */
async function syncTable(group: ThreadGroup, barrier: () => PromiseLike<unknown>): Promise<[number, number][]> {
  return opTable((bytes) => { const buf = new Float32Array(bytes / 4).fill(1); return () => group.allReduce(buf, 'sum'); }, barrier);
}

/** Mean [wall, CPU] seconds per call of a synchronous collective at each TABLE size (`make(bytes)` gives one call). */
async function opTable(make: (bytes: number) => () => void, barrier: () => PromiseLike<unknown>): Promise<[number, number][]> {
  const out: [number, number][] = [];
  for (const [name, bytes, reps] of TABLE) {
    const op = make(bytes);
    for (let w = 0; w < (name === 'small' ? 50 : 2); w++) op();
    await barrier();
    const c0 = process.cpuUsage(), w0 = performance.now();
    for (let r = 0; r < reps; r++) op();
    const wall = (performance.now() - w0) / 1000 / reps, c = process.cpuUsage(c0);
    out.push([wall, (c.user + c.system) / 1e6 / reps]);
  }
  return out;
}

/**
 * The ranks' skew at a synchronous collective: both ranks run the same GEMM stretch (about
 * the work between two tensor-parallel all-reduces of a small model) and then a 1 MiB
 * all-reduce, many times. Per round, wall − own GEMM time − the all-reduce's own wall time
 * is the time spent waiting for the slower rank; returned as a share of the GEMM time.
 */
async function syncSkew(group: ThreadGroup, barrier: () => PromiseLike<unknown>, opWall: number): Promise<number> {
  const buf = new Float32Array(2 ** 18).fill(1);
  return opSkew(() => group.allReduce(buf, 'sum'), barrier, opWall);
}

/** syncSkew for any synchronous collective `op` (a 1 MiB one) whose own wall time is `opWall`. */
async function opSkew(op: () => void, barrier: () => PromiseLike<unknown>, opWall: number): Promise<number> {
  setBlasThreads(1);
  const m = 2048, n = 256, k = 128;
  const a = new Float32Array(m * k).fill(0.5), b = new Float32Array(n * k).fill(0.25), c = new Float32Array(m * n);
  const work = (): void => { for (let i = 0; i < 8; i++) gemm(false, true, m, n, k, 1, a, 0, k, b, 0, k, 0, c, 0, n); };
  for (let w = 0; w < 3; w++) { work(); op(); }
  await barrier();
  let waited = 0, worked = 0;
  const rounds = 40;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    work();
    const t1 = performance.now();
    op();
    const t2 = performance.now();
    worked += t1 - t0;
    waited += Math.max(0, t2 - t1 - opWall * 1000);
  }
  return waited / worked;
}

async function main(): Promise<void> {
  const pg = await initProcessGroup();
  const out: Record<string, number> = {};
  for (const [name, bytes, reps] of SIZES) {
    const buf = new Float32Array(bytes / 4).fill(1);
    for (let w = 0; w < (name === 'small' ? 50 : 2); w++) await pg.allReduce(buf);
    const ts: number[] = [];
    for (let r = 0; r < reps; r++) {
      await pg.barrier();
      const t0 = performance.now();
      await pg.allReduce(buf);
      ts.push((performance.now() - t0) / 1000);
    }
    out[name] = median(ts);
  }
  const thread = await CommThread.start(pg, { prefix: 'athanor/calibrate' });
  const barrier = (): PromiseLike<unknown> => pg.barrier();
  const viaThread = await syncTable(new ThreadGroup(thread.newGroup([0, 1], 'calibrate'), pg.rank, 2, { shm: false }), barrier);
  const tp = new ThreadGroup(thread.newGroup([0, 1], 'calibrate-tp'), pg.rank, 2);
  const viaTp = await syncTable(tp, barrier);
  const skew = await syncSkew(tp, barrier, viaTp[3]![0]);
  tp.close();
  await thread.close();
  // Expert parallelism's exchange as the trainer runs it: a balanced 2-rank all-to-all-v of
  // `bytes` per rank (half stays, half crosses) from the shared staging pool, waited for.
  const epThread = await CommThread.start(pg, { prefix: 'athanor/calibrate-ep' });
  const ep = new ThreadEpComm(epThread, pg.rank, pg.localWorldSize);
  const epOp = (bytes: number): (() => void) => {
    const n = bytes / 4, half = [n / 2, n / 2];
    return () => { const inp = ep.shared('rows-in', n) as Float32Array, out = ep.shared('rows-out', n) as Float32Array; ep.allToAllV([0, 1], inp, half, out, half); };
  };
  const viaEp = await opTable(epOp, barrier);
  const epSkew = await opSkew(epOp(2 ** 20), barrier, viaEp[3]![0]);
  await ep.close();
  // The busier rank's figures, reported by rank 0: [thread CPU ×4, tp wall ×4, tp CPU ×4, skew, ep wall ×4, ep CPU ×4, ep skew].
  const both = new Float32Array([...viaThread.map((x) => x[1]), ...viaTp.map((x) => x[0]), ...viaTp.map((x) => x[1]), skew, ...viaEp.map((x) => x[0]), ...viaEp.map((x) => x[1]), epSkew]);
  await pg.allReduce(both, { op: 'max' });
  const bytes = TABLE.map((x) => x[1]);
  const cpuPoints = bytes.map((b, i) => [b, both[i]!]).sort((p, q) => p[0]! - q[0]!);
  const tpWall = bytes.map((b, i) => [b, both[4 + i]!]).sort((p, q) => p[0]! - q[0]!);
  const tpCpu = bytes.map((b, i) => [b, both[8 + i]!]).sort((p, q) => p[0]! - q[0]!);
  const epWall = bytes.map((b, i) => [b, both[13 + i]!]).sort((p, q) => p[0]! - q[0]!);
  const epCpu = bytes.map((b, i) => [b, both[17 + i]!]).sort((p, q) => p[0]! - q[0]!);
  if (pg.rank === 0) console.log(`ATHANOR_CALIBRATE_COMM ${JSON.stringify({ ...out, cpuSmall: both[0], cpuLarge: both[1], cpuPoints, tpPath: tp.path, tpWall, tpCpu, tpSkew: both[12], epWall, epCpu, epSkew: both[21] })}`);
  await pg.destroy();
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
