// One client of the embedding-server bench, run in a worker thread so that several
// clients can keep one server busy (a single client process is the bottleneck of the
// bench, and a server that idles between requests pays its wake-ups and cold caches).
// Each iteration is a lookup and a gradient push of one batch, the trainer's pattern.
// Two kinds of client:
// - 'trainer': the EmbeddingClient API as a trainer calls it (dedup and routing, rows
//   decoded to float32, a stand-in gradient computed and encoded per iteration);
// - 'replay': a load generator that sends the same requests (the same distinct ids, a
//   bfloat16 gradient per row, the same flags) pre-encoded, on one ServerConnection, and
//   does not decode the answers, so that two of them saturate the server even when they
//   share its machine. The server does identical work per request in both; only the
//   client's own compute differs.
// Messages: {cmd:'warm', group, seconds} -> {sharedMemory}; {cmd:'run', group, seconds, inFlight} -> {it, wall};
// {cmd:'close'} -> exits.
import { parentPort, workerData } from 'node:worker_threads';
import { EmbeddingClient } from '../src/recsys/embedding-client.js';
import { ServerConnection, type EmbeddingEndpoint } from '../src/recsys/server-connection.js';
import { idsToPairs } from '../src/recsys/embedding-hash.js';
import {
  MsgType, PUSH_ADVANCE_STEP, decodePushResponse, encodeFrame, idRequestBytes, lookupResponseBytes, writeIdRequest, type WireDType,
} from '../src/recsys/protocol.js';
import { zipfBatches } from './embedding-server-bench.js';

export interface BenchClientData {
  servers: EmbeddingEndpoint[]; token: string; wire: WireDType; sharedMemoryBytes: number;
  universe: number; zipfS: number; batch: number; seed: number;
  /** Default 'trainer'. */
  kind?: 'trainer' | 'replay';
  /** Move to the server's Unix socket after the TCP hello (default: as EmbeddingClient, with shared memory only). */
  unixSocket?: boolean;
}

type Iterate = (group: number, b: number) => Promise<void>;

async function trainerClient(d: BenchClientData, batches: BigUint64Array[]): Promise<{ iterate: Iterate; shm: () => boolean; unix: () => boolean; close: () => void }> {
  const client = await EmbeddingClient.connect({ servers: d.servers, token: d.token, wireDtype: d.wire, sharedMemoryBytes: d.sharedMemoryBytes, ...(d.unixSocket !== undefined ? { unixSocket: d.unixSocket } : {}) });
  const iterate: Iterate = async (group, b) => {
    const rb = client.route(group, batches[b]!); // dedup + routing once for both calls, as a trainer does
    const rows = await client.lookup(group, rb);
    for (let k = 0; k < rows.length; k++) rows[k] *= 0.001; // a stand-in gradient
    await client.pushGrads(group, rb, rows);
  };
  return { iterate, shm: () => client.sharedMemory[0] === true, unix: () => client.unixSocket[0] === true, close: () => client.close() };
}

async function replayClient(d: BenchClientData, batches: BigUint64Array[]): Promise<{ iterate: Iterate; shm: () => boolean; unix: () => boolean; close: () => void }> {
  if (d.servers.length !== 1) throw new Error('embedding-server-bench-client: the replay client drives one server');
  const conn = new ServerConnection(0, d.servers[0]!, d.token, 30_000, null, d.unixSocket ?? d.sharedMemoryBytes > 0);
  const info = await conn.open();
  if (d.sharedMemoryBytes > 0) await conn.attachShm(d.sharedMemoryBytes);
  const dtype = d.wire;
  // Per group and batch: the lookup and push payloads as EmbeddingClient.lookup / pushGrads write them.
  const cache = new Map<number, Array<{ k: number; look: Uint8Array; push: Uint8Array }>>();
  const encoded = (group: number): Array<{ k: number; look: Uint8Array; push: Uint8Array }> => {
    let e = cache.get(group);
    if (e) return e;
    const dim = info.groups.find((g) => g.id === group)?.dim;
    if (!dim) throw new Error(`embedding-server-bench-client: the server has no group ${group}`);
    e = batches.map((b, bi) => {
      const ids = idsToPairs(group, [...new Set(b)]), k = ids.length / 2;
      const look = new Uint8Array(idRequestBytes(k, dtype, 0, false));
      writeIdRequest(look, group, dtype, 0, ids, 0, k);
      const g = new Float32Array(k * dim);
      for (let i = 0; i < g.length; i++) g[i] = 1e-3 * Math.sin(i + bi); // a stand-in gradient
      const push = new Uint8Array(idRequestBytes(k, dtype, dim, false));
      writeIdRequest(push, group, dtype, PUSH_ADVANCE_STEP, ids, 0, k, { data: g, dim });
      return { k, look, push };
    });
    cache.set(group, e);
    return e;
  };
  const iterate: Iterate = async (group, b) => {
    const dim = info.groups.find((g) => g.id === group)!.dim;
    const r = encoded(group)[b]!;
    await conn.requestShm(MsgType.LOOKUP, r.look.byteLength, lookupResponseBytes(dtype, r.k, dim), (dst) => dst.set(r.look),
      (id) => encodeFrame(MsgType.LOOKUP, id, r.look), (rep) => rep.payload.byteLength);
    await conn.requestShm(MsgType.PUSH, r.push.byteLength, 0, (dst) => dst.set(r.push),
      (id) => encodeFrame(MsgType.PUSH, id, r.push), (rep) => decodePushResponse(rep.payload));
  };
  return { iterate, shm: () => conn.sharedMemory, unix: () => conn.unix, close: () => conn.close() };
}

async function main(): Promise<void> {
  const d = workerData as BenchClientData;
  const batches = zipfBatches(d.universe, d.zipfS, d.batch, 64, d.seed);
  const c = await (d.kind === 'replay' ? replayClient : trainerClient)(d, batches);
  parentPort!.on('message', (m: { cmd: string; group: number; seconds: number; inFlight: number }) => {
    void (async () => {
      if (m.cmd === 'close') { c.close(); process.exit(0); }
      const t0 = performance.now();
      if (m.cmd === 'warm') {
        // Every batch once (creates the hot rows), then on until `seconds` have passed, so
        // that both sides run optimized code before anything is timed.
        let b = 0;
        while (b < batches.length || performance.now() - t0 < m.seconds * 1000) await c.iterate(m.group, b++ % batches.length);
        parentPort!.postMessage({ ok: true, sharedMemory: c.shm(), unixSocket: c.unix() });
        return;
      }
      let it = 0;
      const worker = async (): Promise<void> => {
        while (performance.now() - t0 < m.seconds * 1000) await c.iterate(m.group, it++ % batches.length);
      };
      await Promise.all(Array.from({ length: m.inFlight }, worker));
      parentPort!.postMessage({ it, wall: (performance.now() - t0) / 1000 });
    })().catch((e: unknown) => { console.error(e); process.exit(1); });
  });
  parentPort!.postMessage({ ready: true });
}

void main().catch((e: unknown) => { console.error(e); process.exit(1); });
