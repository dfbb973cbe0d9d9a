// Run by `athanor plan --calibrate` under the launcher with 2 ranks: times all-reduce
// at a small and a large size so the α–β model of this machine's link is measured:
// the wall time on the runtime's own process group, and the CPU time a rank spends per
// collective on the path the trainer's synchronous collectives take (tensor parallelism,
// expert exchanges: a communication thread fed through shared staging buffers and
// waited for with Atomics.wait, parallel/thread-group.ts), all threads of the process.
import { initProcessGroup } from '../runtime/init.js';
import { CommThread } from '../runtime/comm-thread.js';
import { ThreadGroup } from '../parallel/thread-group.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const SIZES = [['small', 4096, 200], ['large', 16 * 2 ** 20, 8]] as const;

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
  const group = new ThreadGroup(thread.newGroup([0, 1], 'calibrate'), pg.rank, 2);
  const cpu: number[] = [];
  // 64 KiB and 1 MiB as well: a collective's CPU cost is not linear in between (the size of
  // tensor-parallel activations and expert exchanges), so the planner interpolates a table.
  for (const [name, bytes, reps] of [...SIZES, ['mid', 2 ** 16, 60], ['mib', 2 ** 20, 30]] as const) {
    const buf = new Float32Array(bytes / 4).fill(1);
    for (let w = 0; w < (name === 'small' ? 50 : 2); w++) group.allReduce(buf, 'sum');
    await pg.barrier();
    // Back to back, as a step issues them: the mean CPU time per all-reduce.
    const c0 = process.cpuUsage();
    for (let r = 0; r < reps; r++) group.allReduce(buf, 'sum');
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1e6 / reps);
  }
  await thread.close();
  // The busier rank's CPU time per all-reduce, reported by rank 0.
  const both = new Float32Array(cpu);
  await pg.allReduce(both, { op: 'max' });
  if (pg.rank === 0) console.log(`ATHANOR_CALIBRATE_COMM ${JSON.stringify({ ...out, cpuSmall: both[0], cpuLarge: both[1], cpuPoints: [[4096, both[0]], [2 ** 16, both[2]], [2 ** 20, both[3]], [16 * 2 ** 20, both[1]]] })}`);
  await pg.destroy();
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
