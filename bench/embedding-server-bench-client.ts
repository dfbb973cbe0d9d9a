// One client of the embedding-server bench, run in a worker thread so that several
// clients can keep one server busy (a single client process is the bottleneck of the
// bench, and a server that idles between requests pays its wake-ups and cold caches).
// Each iteration is a lookup and a gradient push of one batch, the trainer's pattern.
// Messages: {cmd:'warm', group} -> 'ok'; {cmd:'run', group, seconds, inFlight} -> {it};
// {cmd:'close'} -> exits.
import { parentPort, workerData } from 'node:worker_threads';
import { EmbeddingClient } from '../src/recsys/embedding-client.js';
import type { EmbeddingEndpoint } from '../src/recsys/server-connection.js';
import type { WireDType } from '../src/recsys/protocol.js';
import { zipfBatches } from './embedding-server-bench.js';

export interface BenchClientData {
  servers: EmbeddingEndpoint[]; token: string; wire: WireDType; sharedMemoryBytes: number;
  universe: number; zipfS: number; batch: number; seed: number;
}

async function main(): Promise<void> {
  const d = workerData as BenchClientData;
  const client = await EmbeddingClient.connect({ servers: d.servers, token: d.token, wireDtype: d.wire, sharedMemoryBytes: d.sharedMemoryBytes });
  const batches = zipfBatches(d.universe, d.zipfS, d.batch, 64, d.seed);
  const iterate = async (group: number, ids: BigUint64Array): Promise<void> => {
    const rb = client.route(group, ids); // dedup + routing once for both calls, as a trainer does
    const rows = await client.lookup(group, rb);
    for (let k = 0; k < rows.length; k++) rows[k] *= 0.001; // a stand-in gradient
    await client.pushGrads(group, rb, rows);
  };
  parentPort!.on('message', (m: { cmd: string; group: number; seconds: number; inFlight: number }) => {
    void (async () => {
      if (m.cmd === 'close') { client.close(); process.exit(0); }
      if (m.cmd === 'warm') {
        for (const b of batches) await iterate(m.group, b); // creates the hot rows, JIT-compiles both sides
        parentPort!.postMessage({ ok: true, sharedMemory: client.sharedMemory[0] });
        return;
      }
      const t0 = performance.now();
      let it = 0;
      const worker = async (): Promise<void> => {
        while (performance.now() - t0 < m.seconds * 1000) await iterate(m.group, batches[it++ % batches.length]!);
      };
      await Promise.all(Array.from({ length: m.inFlight }, worker));
      parentPort!.postMessage({ it, wall: (performance.now() - t0) / 1000 });
    })().catch((e: unknown) => { console.error(e); process.exit(1); });
  });
  parentPort!.postMessage({ ready: true });
}

void main().catch((e: unknown) => { console.error(e); process.exit(1); });
