// Chooses the parallel layout for `athanor train` from the environment: one process
// unless the launcher (or mpirun) started several ranks.
import type { TrainConfig } from './config.js';
import type { ParallelLayer } from './parallel-layer.js';

export function worldFromEnv(): number {
  return Number(process.env.ATHANOR_WORLD_SIZE ?? process.env.OMPI_COMM_WORLD_SIZE ?? 1);
}

export async function distributedLayerFromEnv(cfg: TrainConfig): Promise<ParallelLayer | null> {
  // Disk offload lives in DataParallel's optimizer, so one process runs it as a data-parallel group of one.
  if (worldFromEnv() <= 1 && cfg.parallel.offload !== 'disk') return null;
  if (cfg.parallel.ep > 1) {
    const { ExpertParallelLayer } = await import('../parallel/expert-parallel-layer.js');
    return ExpertParallelLayer.create(cfg);
  }
  const { DistributedLayer } = await import('./distributed.js');
  return DistributedLayer.create(cfg);
}
