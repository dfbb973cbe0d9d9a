// How parallelism is applied to the GPT of src/nn/gpt.ts (torchtitan's parallelize.py):
// which submodules are ZeRO-3 gather units, which linears are column- or row-parallel,
// where the vocabulary is split. Everything GPT-specific in the parallel layer is here;
// the transforms themselves (data-parallel.ts, zero3.ts, ...) see plain modules.
import type { GPT } from '../../nn/gpt.js';
import { replicate, fullyShard, type DataParallel, type GradComm } from '../data-parallel.js';

export interface GptDataParallelOptions {
  zero: 0 | 1 | 2 | 3;
  bucketMB: number;
  deterministic: boolean;
  transport?: string;
}

/** Data parallelism over the data-parallel group: replicate (ZeRO 0-2) or fully-shard (ZeRO-3, one unit per block). */
export function applyDataParallel(model: GPT, comm: GradComm, rank: number, world: number, o: GptDataParallelOptions): DataParallel {
  if (o.zero === 3) {
    // ZeRO-3 recomputes every block in backward already; a second recomputation would only cost time.
    model.recompute = false;
    return fullyShard(model, comm, rank, world, { bucketMB: o.bucketMB, deterministic: o.deterministic, transport: o.transport, units: model.h, rng: model.rng });
  }
  return replicate(model, comm, rank, world, { zero: o.zero, bucketMB: o.bucketMB, deterministic: o.deterministic, transport: o.transport });
}
