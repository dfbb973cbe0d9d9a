// Public surface of the multi-process runtime.
export * from './communicator.js';
export { initProcessGroup, hostId } from './init.js';
export type { InitOptions, ProcessGroup } from './init.js';
export { TcpStore, TcpStoreServer, STORE_DEFAULT_MAX_FRAME } from './tcp-store.js';
export type { StoreClientOptions, StoreServerOptions } from './tcp-store.js';
export { launch, launchMain, parseLaunchArgs, resolveCommand } from './launcher.js';
export type { LaunchOptions } from './launcher.js';
export { MpiCommunicator, mpiUnavailableReason, underMpirun } from './mpi.js';
export { DEFAULT_TUNING, evenCounts } from './collectives.js';
export type { Tuning } from './collectives.js';
