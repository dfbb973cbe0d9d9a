// Expert parallelism with real processes on loopback: ep=2, ep=4 and ep=2 × dp (world 4)
// train to the same losses and final parameters as one process (tolerance 1e-5), in
// dropless and capacity mode (the same number of tokens dropped each step); the
// hierarchical all-to-all (4 ranks as 2 "nodes" on 127.0.0.2 / 127.0.0.3) gives results
// bit-identical to the flat one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TcpStoreServer } from '../src/runtime/tcp-store.js';
import { parseResult } from './helpers/dist-harness.js';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'ep-worker.js');
type Params = Record<string, { offset: number; data: number[] }>;
interface Out { losses: number[]; dropped: number[]; moved?: number[]; params: Params; rank?: number; ep?: number; edp?: number; exchange?: { calls: number } }

function spawnRank(env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [WORKER], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { err += c; });
    const t = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('close', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

async function runEp(world: number, env: Record<string, string>, perRank: (r: number) => Record<string, string> = () => ({})): Promise<Out[]> {
  const token = randomBytes(16).toString('hex');
  const store = await TcpStoreServer.start({ host: '127.0.0.1', port: 0, token });
  try {
    const rs = await Promise.all(Array.from({ length: world }, (_, rank) => spawnRank({
      ATHANOR_RANK: String(rank), ATHANOR_WORLD_SIZE: String(world), ATHANOR_LOCAL_RANK: String(rank), ATHANOR_LOCAL_WORLD_SIZE: String(world),
      ATHANOR_MASTER_ADDR: '127.0.0.1', ATHANOR_MASTER_PORT: String(store.port), ATHANOR_STORE_TOKEN: token, ATHANOR_STORE_HOSTED: '1',
      ATHANOR_WATCHDOG_S: '120', ...env, ...perRank(rank),
    })));
    rs.forEach((r, i) => assert.equal(r.code, 0, `rank ${i} failed:\n${r.err}\n${r.out}`));
    return rs.map((r) => parseResult(r.out) as unknown as Out);
  } finally {
    await store.close();
  }
}

async function single(env: Record<string, string>): Promise<Out> {
  const r = await spawnRank({ EP_MODE: 'single', ...env });
  assert.equal(r.code, 0, r.err);
  return parseResult(r.out) as unknown as Out;
}

const TOL = 1e-5;

function compare(ref: Out, ranks: Out[], what: string): void {
  for (const r of ranks) {
    assert.equal(r.losses.length, ref.losses.length);
    r.losses.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]!) <= TOL, `${what}: step ${i + 1} loss ${l} vs single process ${ref.losses[i]}`));
    assert.deepEqual(r.dropped, ref.dropped, `${what}: tokens dropped per step`);
    for (const [name, p] of Object.entries(r.params)) {
      const full = ref.params[name]!.data;
      let worst = 0;
      for (let i = 0; i < p.data.length; i++) worst = Math.max(worst, Math.abs(p.data[i]! - full[p.offset + i]!));
      assert.ok(worst <= TOL, `${what}: rank ${r.rank} parameter ${name} differs by ${worst}`);
    }
  }
  // every expert shard is held by some rank
  for (const name of Object.keys(ref.params).filter((n) => n.includes('.moe.experts.'))) {
    const covered = new Set(ranks.map((r) => r.params[name]!.offset));
    assert.equal(covered.size, Math.max(...ranks.map((r) => r.ep!)) + 1, `${what}: shards of ${name}`);
  }
}

for (const [label, env] of [['dropless', { EP_CAPACITY: '0' }], ['capacity 1.0 (tokens dropped)', { EP_CAPACITY: '1' }], ['capacity 1.0, overflow = reroute', { EP_CAPACITY: '1', EP_OVERFLOW: 'reroute' }]] as const) {
  test(`expert parallel ep=2 equals single-process training (${label})`, async () => {
    const ref = await single(env);
    if ('EP_OVERFLOW' in env) assert.ok(ref.moved!.some((d) => d > 0), 'reroute moves tokens to other experts');
    else if (env.EP_CAPACITY !== '0') assert.ok(ref.dropped.some((d) => d > 0), 'capacity mode drops tokens');
    compare(ref, await runEp(2, { ...env, EP_SIZE: '2' }), `ep=2 ${label}`);
  });
}

test('expert parallel ep=4 and ep=2 × dp=2 (world 4) equal single-process training', async () => {
  const env = { EP_CAPACITY: '1.25', EP_SHARED: '1' };
  const ref = await single(env);
  compare(ref, await runEp(4, { ...env, EP_SIZE: '4' }), 'ep=4');
  const r = await runEp(4, { ...env, EP_SIZE: '2' });
  assert.deepEqual(r.map((x) => [x.ep, x.edp]), [[0, 0], [1, 0], [0, 1], [1, 1]]);
  compare(ref, r, 'ep=2 × dp=2');
});

test('hierarchical all-to-all (2 nodes on 127.0.0.2 / 127.0.0.3) equals flat bit for bit', async () => {
  const node = (r: number) => ({
    ATHANOR_HOST_ID: `node${Math.floor(r / 2)}`, ATHANOR_BIND_ADDR: `127.0.0.${2 + Math.floor(r / 2)}`,
    ATHANOR_LOCAL_RANK: String(r % 2), ATHANOR_LOCAL_WORLD_SIZE: '2',
  });
  const env = { EP_SIZE: '4', EP_CAPACITY: '0', EP_STEPS: '3' };
  const flat = await runEp(4, { ...env, EP_A2A: 'flat' }, node);
  const hier = await runEp(4, { ...env, EP_A2A: 'hierarchical' }, node);
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(hier[i]!.losses, flat[i]!.losses);
    assert.deepEqual(hier[i]!.params, flat[i]!.params);
    assert.ok(hier[i]!.exchange!.calls > 0);
  }
});
