// Chooses the gradient synchronisation for `athanor train` from the environment:
// a single process unless the launcher (or mpirun) started several ranks.
import type { TrainConfig } from './config.js';
import type { GradSync } from './trainer.js';

export type DistSync = GradSync & { close?: () => Promise<void> };

export function worldFromEnv(): number {
  return Number(process.env.ATHANOR_WORLD_SIZE ?? process.env.OMPI_COMM_WORLD_SIZE ?? 1);
}

export async function distributedSyncFromEnv(cfg: TrainConfig): Promise<DistSync | null> {
  if (worldFromEnv() <= 1) return null;
  const { dataParallelSync } = await import('../parallel/data-parallel.js');
  return dataParallelSync(cfg);
}
