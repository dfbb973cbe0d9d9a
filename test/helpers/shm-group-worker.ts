// A rank process for test/runtime-shm-collectives.test.ts (spawned through
// dist-harness.ts's runRanks with `worker`): the tensor-parallel ThreadGroup's collectives
// over the world, on whichever path it takes (shared memory on one host, or the
// communication thread with ATHANOR_TP_SHM=0). Inputs are multiples of 1/4 up to 10, so every
// sum is exact in fp32 and bf16 and results must equal the reference bit for bit.
// SHM_MODE=dead: rank 1 exits before the second collective (the others must fail naming it).
import { initProcessGroup } from '../../src/runtime/init.js';
import { CommThread } from '../../src/runtime/comm-thread.js';
import { ThreadGroup } from '../../src/parallel/thread-group.js';
import { createHash } from 'node:crypto';

const v = (r: number, i: number, salt: number): number => ((i * 7 + r * 13 + salt * 3) % 41) / 4;

async function main(): Promise<void> {
  const pg = await initProcessGroup();
  const r = pg.rank, W = pg.size;
  const ct = await CommThread.start(pg, { prefix: 'athanor/shmtest' });
  const g = new ThreadGroup(ct.newGroup([...Array(W).keys()], 'tp'), r, W);
  const failures: string[] = [];
  const hash = createHash('sha256');
  const check = (what: string, got: Float32Array, want: (i: number) => number): void => {
    for (let i = 0; i < got.length; i++) if (got[i] !== want(i)) { failures.push(`${what}[${i}] = ${got[i]}, expected ${want(i)}`); return; }
    hash.update(new Uint8Array(got.buffer, got.byteOffset, got.byteLength));
  };
  if (process.env.SHM_MODE === 'dead') {
    g.allReduce(new Float32Array(4).fill(1), 'sum');
    if (r === 1) process.exit(3);
    g.allReduce(new Float32Array(4).fill(1), 'sum'); // must throw, naming rank 1
    console.log('RESULT {"unexpected":"completed"}');
    return;
  }
  // Sizes: tiny, odd, beyond the first region (growth), back to small (the grown region reused).
  let salt = 0;
  for (const n of [1, 1001, 600_000, 7, 300_001]) {
    for (const wire of ['fp32', 'bf16'] as const) {
      salt++;
      const s = salt;
      const x = Float32Array.from({ length: n }, (_, i) => v(r, i, s));
      g.allReduce(x, 'sum', wire);
      check(`allReduce sum ${wire} n=${n}`, x, (i) => { let a = 0; for (let q = 0; q < W; q++) a += v(q, i, s); return a; });
      const m = Float32Array.from({ length: n }, (_, i) => v(r, i, s));
      g.allReduce(m, 'max', wire);
      check(`allReduce max ${wire} n=${n}`, m, (i) => { let a = -Infinity; for (let q = 0; q < W; q++) a = Math.max(a, v(q, i, s)); return a; });
      const gi = Float32Array.from({ length: n }, (_, i) => v(r, i, s)), go = new Float32Array(n * W);
      g.allGather(gi, go, wire);
      check(`allGather ${wire} n=${n}`, go, (i) => v(Math.floor(i / n), i % n, s));
      const ri = Float32Array.from({ length: n * W }, (_, i) => v(r, i, s)), ro = new Float32Array(n);
      g.reduceScatter(ri, ro, wire);
      check(`reduceScatter ${wire} n=${n}`, ro, (i) => { let a = 0; for (let q = 0; q < W; q++) a += v(q, r * n + i, s); return a; });
    }
  }
  g.close();
  await ct.close();
  console.log(`RESULT ${JSON.stringify({ rank: r, path: g.path, failures, hash: hash.digest('hex') })}`);
  await pg.destroy();
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
