// Public surface of the parallelism layer: transforms applied to a plain model over a
// mesh of communicators from the runtime (src/runtime). Models never import this.
export { ParallelDims, DeviceMesh, DEFAULT_MESH_ORDER } from './parallel-dims.js';
export type { MeshAxis, MeshCoords, MeshDim, ParallelDimsSpec } from './parallel-dims.js';
export { buildMesh, parseMeshOrder, type MeshSpec } from './mesh.js';
export { DataParallel, replicate, fullyShard, type ReplicateOptions } from './data-parallel.js';
export { SingleMemberComm, type GradComm } from './grad-comm.js';
export { enterRegion, exitRegion, regionEntry, rowParallel, columnParallelWithEntry, vocabParallelEmbedding, sequenceParallelNorm } from './tensor-parallel.js';
export { ThreadGroup } from './thread-group.js';
export { globalRuns, localShape, mapRange, type Shard } from './placement.js';
export { TensorParallelCheckpoint } from './tp-checkpoint.js';
export { applyDataParallel, buildTensorParallelGpt, gptShardOf, validateGptTensorParallel } from './plans/gpt.js';
