// A rank process for the dist tests (spawned by test/helpers/dist-harness.ts, by the
// launcher, or by mpirun). DIST_MODE selects the scenario; results go to stdout as one
// `RESULT {json}` line.
import { initProcessGroup } from '../../src/runtime/init.js';
import type { CommBuffer, CommDType, Communicator, ReduceOp } from '../../src/runtime/communicator.js';
import { evenCounts } from '../../src/runtime/collectives.js';
import { ParallelDims } from '../../src/parallel/parallel-dims.js';
import { bf16ToF32, f32ToBf16 } from '../../src/core/dtype.js';
import { createHash } from 'node:crypto';
import { CommThread } from '../../src/runtime/comm-thread.js';

const mode = process.env.DIST_MODE ?? 'collectives';
const sizes = (process.env.DIST_SIZES ?? '0,1,7,1000003').split(',').map(Number);
const dtypes = (process.env.DIST_DTYPES ?? 'float32,bfloat16,int32').split(',') as CommDType[];

// Integer-valued inputs keep every reduction exact, so results must equal the reference
// bit for bit whatever the summation order.
function value(d: CommDType, rank: number, i: number, salt: number): number {
  if (d === 'int32') return (Math.imul(i + 1, 2654435761) ^ Math.imul(rank + 7, 40503) ^ salt) | 0;
  return ((i * 7 + rank * 13 + salt * 5) % 17) - 8;
}
function make(d: CommDType, n: number): CommBuffer {
  return d === 'float32' ? new Float32Array(n) : d === 'int32' ? new Int32Array(n) : new Uint16Array(n);
}
function fill(d: CommDType, rank: number, n: number, salt: number, off = 0): CommBuffer {
  const b = make(d, n);
  for (let i = 0; i < n; i++) { const v = value(d, rank, i + off, salt); b[i] = d === 'bfloat16' ? f32ToBf16(v) : v; }
  return b;
}
function decode(d: CommDType, b: CommBuffer, i: number): number { return d === 'bfloat16' ? bf16ToF32(b[i]!) : b[i]!; }
function reduceRef(d: CommDType, op: ReduceOp, W: number, n: number, salt: number, off = 0): CommBuffer {
  const out = make(d, n);
  for (let i = 0; i < n; i++) {
    let acc = value(d, 0, i + off, salt);
    for (let r = 1; r < W; r++) {
      const v = value(d, r, i + off, salt);
      acc = op === 'max' ? Math.max(acc, v) : d === 'int32' ? (acc + v) | 0 : acc + v;
    }
    if (op === 'avg') acc = acc / W;
    out[i] = d === 'bfloat16' ? f32ToBf16(acc) : acc;
  }
  return out;
}

const failures: string[] = [];
const hashes: Record<string, string> = {};
function same(name: string, d: CommDType, got: CommBuffer, want: CommBuffer): void {
  if (got.length !== want.length) { failures.push(`${name}: length ${got.length} != ${want.length}`); return; }
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) { failures.push(`${name}: element ${i}: got ${decode(d, got, i)} want ${decode(d, want, i)}`); return; }
  }
}
function hashOf(b: CommBuffer): string {
  return createHash('sha1').update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)).digest('hex').slice(0, 16);
}

async function collectives(pg: Communicator): Promise<void> {
  const W = pg.size, r = pg.rank;
  let salt = 0;
  for (const d of dtypes) {
    for (const n of sizes) {
      const ops: ReduceOp[] = d === 'int32' ? ['sum', 'max'] : ['sum', 'avg', 'max'];
      for (const op of ops) {
        for (const algorithm of [undefined, 'ring', 'direct'] as const) {
          if (algorithm === 'direct' && n > 100_000) continue;
          salt++;
          const b = fill(d, r, n, salt);
          await pg.allReduce(b, { op, algorithm });
          same(`allreduce ${d} n=${n} ${op} ${algorithm ?? 'auto'}`, d, b, reduceRef(d, op, W, n, salt));
        }
      }
      // reduce-scatter (uneven and even), all-gather (uneven and even)
      salt++;
      {
        const counts = evenCounts(n, W);
        const off = counts.slice(0, r).reduce((a, c) => a + c, 0);
        const out = make(d, counts[r]!);
        const inp = fill(d, r, n, salt);
        const copy = inp.slice();
        await pg.reduceScatterV(inp, out, counts);
        same(`reduceScatterV ${d} n=${n}`, d, out, reduceRef(d, 'sum', W, n, salt).subarray(off, off + counts[r]!));
        same(`reduceScatterV ${d} n=${n} leaves input alone`, d, inp, copy);
        const k = Math.ceil(n / W);
        const inp2 = fill(d, r, k * W, salt), out2 = make(d, k);
        await pg.reduceScatter(inp2, out2, d === 'int32' ? 'sum' : 'avg');
        same(`reduceScatter ${d} n=${k * W}`, d, out2, reduceRef(d, d === 'int32' ? 'sum' : 'avg', W, k * W, salt).subarray(r * k, (r + 1) * k));

        const gin = fill(d, r, counts[r]!, salt, off);
        const gout = make(d, n);
        await pg.allGatherV(gin, gout, counts);
        const want = make(d, n);
        let o = 0;
        for (let j = 0; j < W; j++) { want.set(fill(d, j, counts[j]!, salt, o) as Float32Array & Uint16Array & Int32Array, o); o += counts[j]!; }
        same(`allGatherV ${d} n=${n}`, d, gout, want);
        const m = Math.min(n, 1000);
        const gout2 = make(d, m * W);
        await pg.allGather(fill(d, r, m, salt), gout2);
        const want2 = make(d, m * W);
        for (let j = 0; j < W; j++) want2.set(fill(d, j, m, salt) as Float32Array & Uint16Array & Int32Array, j * m);
        same(`allGather ${d} n=${m}`, d, gout2, want2);
      }
      // broadcast from the last rank
      salt++;
      {
        const root = W - 1;
        const b = r === root ? fill(d, root, n, salt) : make(d, n);
        await pg.broadcast(b, root);
        same(`broadcast ${d} n=${n}`, d, b, fill(d, root, n, salt));
      }
      // all-to-all-v with awkward counts: rank s sends (n + s + t) % 11 (+ n/W for big n) to t
      salt++;
      {
        const cnt = (s: number, t: number): number => ((n + 3 * s + t) % 11) + (n > 1000 ? Math.floor(n / (W * 4)) : 0) * (n > 0 ? 1 : 0);
        const sendCounts = Array.from({ length: W }, (_, t) => (n === 0 ? 0 : cnt(r, t)));
        const recvCounts = Array.from({ length: W }, (_, s) => (n === 0 ? 0 : cnt(s, r)));
        const inp = fill(d, r, sendCounts.reduce((a, c) => a + c, 0), salt);
        const out = make(d, recvCounts.reduce((a, c) => a + c, 0));
        await pg.allToAllV(inp, sendCounts, out, recvCounts);
        const want = make(d, out.length);
        let o = 0;
        for (let s = 0; s < W; s++) {
          const sc = Array.from({ length: W }, (_, t) => (n === 0 ? 0 : cnt(s, t)));
          const so = sc.slice(0, r).reduce((a, c) => a + c, 0);
          want.set(fill(d, s, so + sc[r]!, salt).subarray(so) as Float32Array & Uint16Array & Int32Array, o);
          o += sc[r]!;
        }
        same(`allToAllV ${d} n=${n}`, d, out, want);
        const chunk = Math.min(n, 997);
        const a2 = fill(d, r, chunk * W, salt), o2 = make(d, chunk * W);
        await pg.allToAll(a2, o2);
        const w2 = make(d, chunk * W);
        for (let s = 0; s < W; s++) w2.set(fill(d, s, chunk * W, salt).subarray(r * chunk, (r + 1) * chunk) as Float32Array & Uint16Array & Int32Array, s * chunk);
        same(`allToAll ${d} chunk=${chunk}`, d, o2, w2);
      }
    }
  }
  // send/recv around a ring, two tags in flight at once
  if (W > 1) {
    const a = fill('float32', r, 1001, 99), b = fill('int32', r, 5, 98);
    const ra = new Float32Array(1001), rb = new Int32Array(5);
    const next = (r + 1) % W, prev = (r + W - 1) % W;
    await Promise.all([pg.send(a, next, 1).wait(), pg.send(b, next, 2).wait(), pg.recv(rb, prev, 2).wait(), pg.recv(ra, prev, 1).wait()]);
    same('send/recv f32', 'float32', ra, fill('float32', prev, 1001, 99));
    same('send/recv i32', 'int32', rb, fill('int32', prev, 5, 98));
  }
  await pg.barrier();
  // Several collectives in flight at once (overlap), completed in any order.
  {
    const bufs = [0, 1, 2, 3].map((k) => fill('float32', r, k === 2 ? 300_001 : 1000 + k, 500 + k));
    const works = bufs.map((b) => pg.allReduce(b));
    for (const w of works.reverse()) await w.wait();
    bufs.forEach((b, k) => same(`overlapped allreduce #${k}`, 'float32', b, reduceRef('float32', 'sum', W, b.length, 500 + k)));
  }
  // Non-integer data: ring result must be bit-identical on every rank.
  for (const n of [1000, 1_000_003]) {
    const b = new Float32Array(n);
    for (let i = 0; i < n; i++) b[i] = Math.sin(i * 0.37 + r * 1.3) * 1e3;
    const h = new Uint16Array(n);
    for (let i = 0; i < n; i++) h[i] = f32ToBf16(Math.cos(i * 0.11 + r));
    await pg.allReduce(b);
    await pg.allReduce(h);
    hashes[`f32-${n}`] = hashOf(b);
    hashes[`bf16-${n}`] = hashOf(h);
  }
  // Sub-groups: even ranks and odd ranks (of this communicator).
  if (W > 1) {
    const idx = [...Array(W).keys()].filter((x) => x % 2 === r % 2);
    const mine = idx.map((i) => pg.ranks[i]!);
    const g = pg.newGroup(mine);
    const b = new Float32Array(10).fill(r + 1);
    await g.allReduce(b);
    const want = idx.reduce((a, x) => a + x + 1, 0);
    if (b[9] !== want) failures.push(`subgroup allreduce: got ${b[9]} want ${want}`);
    await g.barrier();
  }
}

async function main(): Promise<void> {
  const pg = await initProcessGroup();
  const r = pg.rank;
  if (mode === 'collectives') {
    await collectives(pg);
    if (process.env.DIST_SUB === '1' && pg.size > 1) {
      // The suite again on a sub-group (even / odd ranks) of this communicator.
      const worldHashes = { ...hashes };
      const before = failures.length;
      await collectives(pg.newGroup([...Array(pg.size).keys()].filter((x) => x % 2 === r % 2), 'parity'));
      for (let i = before; i < failures.length; i++) failures[i] = `sub: ${failures[i]}`;
      Object.assign(hashes, worldHashes);
    }
    console.log(`RESULT ${JSON.stringify({ rank: r, world: pg.size, backend: pg.backend, failures, hashes })}`);
  } else if (mode === 'commthread') {
    // The whole suite on the communication thread's world, then again on a sub-group of it
    // (even / odd ranks), plus waitSync on shared and on ordinary buffers.
    const ct = await CommThread.start(pg);
    await collectives(ct);
    const worldFailures = failures.splice(0);
    const worldHashes = { ...hashes };
    const sub = ct.newGroup([...Array(pg.size).keys()].filter((x) => x % 2 === r % 2), 'parity');
    await collectives(sub);
    const subFailures = failures.splice(0);
    const sab = new Int32Array(new SharedArrayBuffer(12)).fill(r + 1), plain = new Int32Array(3).fill(r + 1);
    ct.waitSync(ct.allReduce(sab));
    ct.waitSync(sub.allReduce(plain));
    const wsum = (pg.size * (pg.size + 1)) / 2, ssum = sub.ranks.reduce((a, x) => a + x + 1, 0);
    if (sab[2] !== wsum) failures.push(`waitSync shared: ${sab[2]} != ${wsum}`);
    if (plain[2] !== ssum) failures.push(`waitSync plain buffer: ${plain[2]} != ${ssum}`);
    await ct.close();
    console.log(`RESULT ${JSON.stringify({ rank: r, world: pg.size, backend: ct.backend, failures: [...worldFailures, ...subFailures.map((f) => `sub: ${f}`), ...failures], hashes: worldHashes, subRanks: sub.ranks })}`);
  } else if (mode === 'commthread-legacy') {
    // The older call form other modules use: start(InitOptions, group ranks), allReduce(buf, op,
    // deterministic), waitSync(id). Under mpirun the socket backend it names is ignored: MPI.
    const group = [...Array(pg.size).keys()].filter((x) => x % 2 === r % 2);
    const t = await CommThread.start({ prefix: 'athanor/legacy', hostStore: false, backend: pg.backend === 'mpi' ? 'tcp' : 'auto' }, group);
    const b = new Float32Array(new SharedArrayBuffer(16)).fill(r + 1);
    const w = t.allReduce(b, 'sum', true);
    t.waitSync(w.id);
    await w.done;
    const want = group.reduce((a, x) => a + x + 1, 0);
    if (b[3] !== want) failures.push(`legacy allreduce over [${group}]: ${b[3]} != ${want}`);
    const rs = new Float32Array(new SharedArrayBuffer(4 * group.length)).fill(1), out = new Float32Array(new SharedArrayBuffer(4));
    await t.reduceScatterV(rs, out, new Array<number>(group.length).fill(1), 'avg').done;
    if (out[0] !== 1) failures.push(`legacy reduceScatterV avg: ${out[0]}`);
    await t.close();
    console.log(`RESULT ${JSON.stringify({ rank: r, backend: t.backend, ranks: t.ranks, failures })}`);
  } else if (mode === 'p2p-many') {
    // Rank 0 posts 12 receives before the send its peer waits for: more outstanding p2p than
    // libuv's 4 pool threads (blocking MPI_Recv on each would deadlock).
    const comm: Communicator = process.env.DIST_VIA === 'main' ? pg : await CommThread.start(pg);
    const N = 12;
    const bufs = Array.from({ length: N + 1 }, (_, t) => new Int32Array(4).fill(r === 0 ? 0 : t));
    if (r === 0) {
      const recvs = bufs.slice(1).map((b, i) => comm.recv(b, 1, i + 1).wait());
      await comm.send(bufs[0]!, 1, 100).wait();
      await Promise.all(recvs);
      bufs.slice(1).forEach((b, i) => { if (b[3] !== i + 1) failures.push(`recv tag ${i + 1}: got ${b[3]}`); });
    } else if (r === 1) {
      await comm.recv(bufs[0]!, 0, 100).wait();
      for (let t = 1; t <= N; t++) await comm.send(bufs[t]!, 0, t).wait();
    }
    await comm.barrier();
    if (comm !== pg) await comm.destroy();
    console.log(`RESULT ${JSON.stringify({ rank: r, failures })}`);
  } else if (mode === 'p2p-hang') {
    // Rank 0 waits for a message rank 1 never sends (on the comm thread or the main communicator).
    const comm: Communicator = process.env.DIST_VIA === 'main' ? pg : await CommThread.start(pg);
    await comm.barrier();
    if (r === 0) await comm.recv(new Float32Array(16), 1, 7);
    else await new Promise((res) => setTimeout(res, 90_000));
    console.log('RESULT {"unexpected":"completed"}');
  } else if (mode === 'rank-error') {
    // Rank 1 fails (an error after start-up) while rank 0 waits in a collective for it.
    const comm: Communicator = process.env.DIST_VIA === 'main' ? pg : await CommThread.start(pg);
    await comm.barrier();
    if (r === 1) throw new Error('rank 1 failed on purpose');
    await comm.allReduce(new Float32Array(8));
    console.log('RESULT {"unexpected":"completed"}');
  } else if (mode === 'thread-watchdog') {
    // On the comm thread: rank DIST_SKIP never enters the 3rd collective.
    const ct = await CommThread.start(pg);
    const skip = Number(process.env.DIST_SKIP ?? '1');
    const b = new Float32Array(100);
    await ct.allReduce(b);
    await ct.barrier();
    if (r !== skip) await ct.allReduce(b);
    else await new Promise((res) => setTimeout(res, 90_000));
    console.log('RESULT {"unexpected":"completed"}');
  } else if (mode === 'watchdog') {
    // Rank DIST_SKIP skips the 3rd allreduce and then idles (its event loop stays responsive).
    const skip = Number(process.env.DIST_SKIP ?? '1');
    const b = new Float32Array(100);
    await pg.allReduce(b);
    await pg.barrier();
    if (r === skip) {
      // Stay away until the others' watchdog has aborted the group, then try. Waiting for
      // the abort itself, not for a fixed time: under load the watchdog's status queries
      // can take seconds, and a rank that joined before the abort arrived would complete
      // the allreduce with everyone (the test then failed once in a while).
      const group = pg as unknown as { aborted: Error | null };
      while (!group.aborted) await new Promise((res) => setTimeout(res, 50));
      try { await pg.allReduce(b); console.log('RESULT {"unexpected":"completed"}'); }
      catch (e) { console.log(`RESULT ${JSON.stringify({ rank: r, error: (e as Error).message })}`); process.exit(7); }
    } else {
      try { await pg.allReduce(b); console.log('RESULT {"unexpected":"completed"}'); }
      catch (e) { console.log(`RESULT ${JSON.stringify({ rank: r, error: (e as Error).message })}`); process.exit(7); }
    }
  } else if (mode === 'mismatch') {
    const b = new Float32Array(100);
    try {
      // Inside the try: a rank still finishing the barrier can already be told to abort.
      await pg.barrier();
      if (r === 0) await pg.broadcast(b, 0); else await pg.allReduce(b);
      console.log('RESULT {"unexpected":"completed"}');
    } catch (e) { console.log(`RESULT ${JSON.stringify({ rank: r, error: (e as Error).message })}`); process.exit(7); }
  } else if (mode === 'peer-death') {
    const victim = Number(process.env.DIST_VICTIM ?? '1');
    const b = new Float32Array(1 << 20);
    await pg.allReduce(b);
    if (r === victim) { setTimeout(() => process.exit(9), 200); await new Promise(() => {}); }
    try { await pg.allReduce(b); await pg.allReduce(b); console.log('RESULT {"unexpected":"completed"}'); }
    catch (e) { console.log(`RESULT ${JSON.stringify({ rank: r, error: (e as Error).message })}`); process.exit(7); }
  } else if (mode === 'launch-fail') {
    // Rank DIST_VICTIM fails (exit 3 or SIGKILL itself); the others would idle for a minute.
    const victim = Number(process.env.DIST_VICTIM ?? '1');
    console.log(`hello from rank ${r} pid ${process.pid}`);
    await pg.barrier();
    if (r === victim) {
      if (process.env.DIST_HOW === 'kill') process.kill(process.pid, 'SIGKILL');
      else process.exit(3);
    }
    await new Promise((res) => setTimeout(res, 60_000));
  } else if (mode === 'mesh') {
    const via: Communicator = process.env.DIST_VIA === 'thread' ? await CommThread.start(pg) : pg;
    const dims = new ParallelDims({ world: pg.size, tp: Number(process.env.DIST_TP ?? '1'), pp: Number(process.env.DIST_PP ?? '1'), ep: Number(process.env.DIST_EP ?? '1') });
    const mesh = dims.build(via);
    const got: Record<string, unknown> = {};
    for (const d of ['tp', 'dp', 'pp', 'ep', 'edp'] as const) {
      const g = mesh.get(d);
      const b = new Int32Array([1 << r]);
      await g.allReduce(b);
      got[d] = { ranks: g.ranks, mask: b[0], rank: g.rank };
    }
    console.log(`RESULT ${JSON.stringify({ rank: r, coords: mesh.coords, groups: got, backend: via.backend })}`);
    if (via !== pg) await via.destroy();
  } else if (mode === 'zero3-memory') {
    const { zero3Memory } = await import('./zero3-memory.js');
    console.log(`RESULT ${JSON.stringify(await zero3Memory(pg))}`);
  } else if (mode === 'zero-peak') {
    const { zeroPeak } = await import('./zero-peak.js');
    console.log(`RESULT ${JSON.stringify(await zeroPeak(pg))}`);
  } else if (mode === 'launch-ok') {
    const b = new Int32Array([r]);
    await pg.allReduce(b);
    console.log(`sum=${b[0]} rank=${r} world=${pg.size} env=${process.env.RANK}/${process.env.WORLD_SIZE}/${process.env.LOCAL_RANK}`);
  }
  await pg.destroy();
}

main().catch((e) => { console.error(`worker rank ${process.env.ATHANOR_RANK ?? process.env.OMPI_COMM_WORLD_RANK}: ${(e as Error).stack ?? e}`); process.exit(1); });
