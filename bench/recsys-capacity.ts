// Honest capacity: an embedding table whose id space x dim is >= 10^12 addressable
// parameters (8 groups x 2^36 ids x 16 dims = 8.8e12) served by 2 servers on this
// machine, while the LRU capacity bounds what is resident. Ids are drawn uniformly from
// the whole 2^36 space of each group (almost every id is new: worst case for the LRU),
// each batch is looked up and its gradients pushed, as in training. Reports addressable
// vs resident parameters, evictions, and each server's RSS.
// Run: node dist/bench/recsys-capacity.js [batches]
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { launchEmbeddingServers } from '../src/recsys/embedding-launch.js';

export interface CapacityResult {
  groups: number; idBits: number; dim: number; capacityPerGroupPerServer: number;
  addressableParams: number; residentParams: number; residentRows: number; residentBytes: number;
  idsTouched: number; evictions: number; serverRssMiB: number[]; seconds: number;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

export async function runRecsysCapacity(o: { batches?: number; batch?: number; capacity?: number } = {}): Promise<CapacityResult> {
  const G = 8, idBits = 36, dim = 16, capacity = o.capacity ?? 250_000, batches = o.batches ?? 120, B = o.batch ?? 8192;
  const cl = await launchEmbeddingServers({
    numShards: 2,
    config: { seed: 1, groups: Array.from({ length: G }, (_, g) => ({ id: g, dim, idBits, capacity })), optimizer: { kind: 'adagrad', lr: 0.01, eps: 1e-10, initialAccumulator: 0 } },
  });
  const client = await cl.connect({ wireDtype: 'bfloat16' });
  const t0 = performance.now();
  let s = 0x2545f491;
  const rnd = (): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; };
  try {
    const span = 2 ** idBits;
    for (let b = 0; b < batches; b++) {
      await Promise.all(Array.from({ length: G }, async (_, g) => {
        const ids = new Float64Array(B);
        for (let i = 0; i < B; i++) ids[i] = Math.floor(rnd() * span);
        const rb = client.route(g, ids);
        const rows = await client.lookup(g, rb);
        for (let i = 0; i < rows.length; i++) rows[i] = rows[i]! * 0.01;
        await client.pushGrads(g, rb, rows, { advanceStep: g === G - 1 });
      }));
    }
    const st = await client.stats();
    const evictions = st.shards.reduce((a, sh) => a + sh.groups.reduce((x, gr) => x + ((gr as unknown as { counters?: { evictions: number } }).counters?.evictions ?? 0), 0), 0);
    return {
      groups: G, idBits, dim, capacityPerGroupPerServer: capacity,
      addressableParams: st.addressableParams, residentParams: st.residentParams, residentRows: st.rows, residentBytes: st.residentBytes,
      idsTouched: batches * B * G, evictions, serverRssMiB: cl.servers.map((x) => rssMiB(x.pid)), seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    client.close();
    await cl.stop();
  }
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const batches = process.argv[2] ? Number(process.argv[2]) : undefined;
  runRecsysCapacity(batches ? { batches } : {}).then((r) => {
    console.log(`recsys capacity: ${r.groups} groups x 2^${r.idBits} ids x ${r.dim} dims on 2 servers, LRU capacity ${r.capacityPerGroupPerServer} rows per group per server`);
    console.log(`  addressable parameters: ${r.addressableParams.toExponential(3)}`);
    console.log(`  resident embedding values: ${(r.residentRows * r.dim).toExponential(3)} (rows x dim); with optimizer state: ${r.residentParams.toExponential(3)} (${r.residentRows} rows, ${(r.residentBytes / 2 ** 20).toFixed(0)} MiB reported by the servers)`);
    console.log(`  ids looked up and updated: ${r.idsTouched} in ${r.seconds.toFixed(1)} s; evictions ${r.evictions}`);
    console.log(`  server RSS: ${r.serverRssMiB.map((x) => `${x.toFixed(0)} MiB`).join(', ')}`);
    console.log(JSON.stringify(r));
  }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
