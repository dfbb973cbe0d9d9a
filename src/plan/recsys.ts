// Recommender plans (PERSIA-style hybrid training): embedding-server memory (rows,
// sparse optimizer state, index and LRU bookkeeping), how many rows the LRU keeps, the
// lookups per second the trainers demand against the servers' measured rate, and the
// dense trainers' throughput from the DLRM traced on the meta device.
import type { RecsysConfig } from '../recsys/recsys-config.js';
import { stateWidth, type SparseOptimizerConfig } from '../recsys/sparse-optimizer.js';
import { META_BYTES_PER_ROW } from '../recsys/embedding-store.js';
import type { ClusterSpec } from './cluster.js';
import { estimate } from './estimate.js';
import { defaultLayout } from './layout.js';
import { traceDlrm } from './models.js';

/**
 * Server bytes per resident row beyond the row and its optimizer state, from the store's own
 * layout (embedding-store.ts): one metadata record per slot (id, hash, LRU links, step,
 * marks: META_BYTES_PER_ROW), a 4-byte slot entry beside it, and the id index's share:
 * 4-byte buckets, a power of two from 1024 that doubles whenever it would pass half full,
 * so at `capacity` rows per group it holds the buckets computed below.
 */
export function serverRowOverheadBytes(capacityPerGroup: number): number {
  let buckets = 1024;
  while (capacityPerGroup * 2 > buckets) buckets *= 2;
  return META_BYTES_PER_ROW + 4 + (4 * buckets) / Math.max(1, capacityPerGroup);
}

export interface RecsysPlan {
  dim: number;
  fields: number;
  bytesPerRow: number;
  residentRowsPerServer: number;
  serverBytesEach: number;
  addressableParams: number;
  denseParams: number;
  trainerSamplesPerSec: number;
  lookupsPerSecDemanded: number;
  lookupsPerSecCapacity: number | null;
  serversForThroughput: number | null;
  /** For a target embedding size: servers (instances) needed to hold it. */
  target: { embeddingParams: number; rows: number; bytes: number; serversForMemory: number | null } | null;
  notes: string[];
}

export function planRecsys(cfg: RecsysConfig, c: ClusterSpec, o: { embeddingParams?: number } = {}): RecsysPlan {
  const notes: string[] = [];
  const D = cfg.model.embDim, F = cfg.data.numSparse;
  const opt = cfg.servers.optimizer as SparseOptimizerConfig;
  const bytesPerRow = 4 * (D + stateWidth(opt, D)) + serverRowOverheadBytes(cfg.servers.capacity);
  // The LRU keeps at most `capacity` rows per feature group on each server.
  const residentRowsPerServer = cfg.servers.capacity * F;
  const serverBytesEach = residentRowsPerServer * bytesPerRow;
  const addressableParams = F * 2 ** cfg.servers.idBits * D;

  const B = cfg.train.batchSize;
  const tr = traceDlrm({ numDense: cfg.data.numDense, numSparse: F, embDim: D, bottom: cfg.model.bottom, top: cfg.model.top }, { batch: B });
  const est = estimate(tr, { ...defaultLayout(), dp: cfg.train.trainers, mb: B }, c, { seqLen: 1, dModel: D });
  const trainerSamplesPerSec = est.tokensPerSec; // one "token" per sample here
  const lookupsPerSecDemanded = trainerSamplesPerSec * F;
  const rate = c.embeddingRowsPerSecPerCore?.value ?? null;
  const cores = c.embeddingServer?.coresPerInstance.value ?? 1;
  // One Athanor server process is single-threaded: an instance of N cores runs N shards.
  const lookupsPerSecCapacity = rate !== null ? rate * cfg.servers.numShards : null;
  const serversForThroughput = rate !== null ? Math.ceil(lookupsPerSecDemanded / (rate * cores)) : null;
  if (rate === null) notes.push(`${c.name} has no measured embedding-server rate (embeddingRowsPerSecPerCore): lookup capacity not priced`);
  let target: RecsysPlan['target'] = null;
  if (o.embeddingParams !== undefined) {
    const rows = o.embeddingParams / D;
    const bytes = rows * bytesPerRow;
    const mem = c.embeddingServer?.memoryBytesPerInstance.value ?? c.hostMemoryBytesPerNode?.value;
    target = { embeddingParams: o.embeddingParams, rows, bytes, serversForMemory: mem ? Math.ceil(bytes / mem) : null };
    if (!mem) notes.push(`${c.name} lists no server memory: servers for ${o.embeddingParams.toExponential(2)} parameters not computed`);
  }
  return {
    dim: D, fields: F, bytesPerRow, residentRowsPerServer, serverBytesEach, addressableParams, denseParams: tr.numParams,
    trainerSamplesPerSec, lookupsPerSecDemanded, lookupsPerSecCapacity, serversForThroughput, target, notes,
  };
}
