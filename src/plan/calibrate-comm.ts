// Run by `athanor plan --calibrate` under the launcher with 2 ranks: times all-reduce
// at a small and a large size so the α–β model of this machine's link is measured.
import { initProcessGroup } from '../runtime/init.js';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const pg = await initProcessGroup();
  const out: Record<string, number> = {};
  // CPU seconds of this process (all threads: the transport's copies, reductions and
  // socket calls) per all-reduce, beside the wall time: what communication costs a core.
  const cpuOut: Record<string, number> = {};
  for (const [name, bytes, reps] of [['small', 4096, 200], ['large', 16 * 2 ** 20, 8]] as const) {
    const buf = new Float32Array(bytes / 4).fill(1);
    for (let w = 0; w < (name === 'small' ? 50 : 2); w++) await pg.allReduce(buf);
    const ts: number[] = [], cs: number[] = [];
    for (let r = 0; r < reps; r++) {
      await pg.barrier();
      const t0 = performance.now(), c0 = process.cpuUsage();
      await pg.allReduce(buf);
      const c = process.cpuUsage(c0);
      ts.push((performance.now() - t0) / 1000);
      cs.push((c.user + c.system) / 1e6);
    }
    out[name] = median(ts);
    cpuOut[name] = cs.reduce((a, b) => a + b, 0) / cs.length;
  }
  // Both ranks' CPU time: the larger (mean per all-reduce) is reported by rank 0.
  const both = new Float32Array([cpuOut.small!, cpuOut.large!]);
  await pg.allReduce(both, { op: 'max' });
  if (pg.rank === 0) console.log(`ATHANOR_CALIBRATE_COMM ${JSON.stringify({ ...out, cpuSmall: both[0], cpuLarge: both[1] })}`);
  await pg.destroy();
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
