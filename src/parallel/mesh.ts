// The device mesh: ParallelDims (how the world splits into tp / dp / pp (and ep) and
// in which rank order) plus this rank's coordinates and one communicator per dimension.
// Default order: tp fastest (the chattiest dimension on neighbouring ranks, i.e. inside
// a node), then dp, then pp; `order` changes it.
import type { Communicator } from '../runtime/communicator.js';
import { ParallelDims, DeviceMesh, type MeshAxis } from './parallel-dims.js';

export { ParallelDims, DeviceMesh, DEFAULT_MESH_ORDER } from './parallel-dims.js';
export type { MeshAxis, MeshCoords, MeshDim, ParallelDimsSpec } from './parallel-dims.js';

export interface MeshSpec {
  tp?: number;
  pp?: number;
  dp?: number;
  ep?: number;
  order?: readonly MeshAxis[];
}

/** Builds this rank's mesh over the world communicator (every rank calls it, in the same order). */
export function buildMesh(world: Communicator, spec: MeshSpec): DeviceMesh {
  return new ParallelDims({ world: world.size, ...spec }).build(world);
}

/** Parses a mesh order such as "tp,dp,pp" (fastest first), naming `field` on bad input. */
export function parseMeshOrder(s: string, field: string): MeshAxis[] {
  const parts = s.split(',').map((x) => x.trim());
  const ok = parts.length === 3 && ['tp', 'dp', 'pp'].every((a) => parts.includes(a));
  if (!ok) throw new Error(`${field} must list tp, dp and pp once each, fastest first (e.g. "tp,dp,pp"), got '${s}'`);
  return parts as MeshAxis[];
}
