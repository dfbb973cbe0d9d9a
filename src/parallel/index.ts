// Public surface of the parallelism layer: transforms applied to a plain model over a
// mesh of communicators from the runtime (src/runtime). Models never import this.
export { ParallelDims, DeviceMesh } from './parallel-dims.js';
export type { MeshCoords, MeshDim, ParallelDimsSpec } from './parallel-dims.js';
