// ParallelDims / DeviceMesh: how the world is split into data (dp), tensor (tp), pipeline (pp)
// and expert (ep) parallel groups.
//
// Rank order (default tp fastest, then dp, then pp):  rank = tp_i + tp * (dp_i + dp * pp_i).
// `order` changes it (fastest first), e.g. ['dp', 'tp', 'pp'].
// ep borrows from dp, as in torchtitan: dp = edp * ep with the ep index fastest inside dp,
//   dp_i = ep_i + ep * edp_i.
// So a tp group is contiguous ranks (best locality for the chattiest dimension), and an ep
// group is ranks that share pp, tp and the "expert data parallel" index edp_i. Expert
// parameters are sharded over ep and their gradients are reduced over edp (dp / ep ranks);
// dense parameters are reduced over the whole dp group.
import type { Communicator } from '../runtime/communicator.js';
import { DistError } from '../runtime/communicator.js';

export type MeshDim = 'dp' | 'tp' | 'pp' | 'ep' | 'edp';

export interface ParallelDimsSpec {
  world: number;
  /** -1 (default) infers dp = world / (tp * pp). */
  dp?: number;
  tp?: number;
  pp?: number;
  /** Must divide dp (default 1). */
  ep?: number;
  /** Rank order, fastest-varying dimension first (default ['tp', 'dp', 'pp']). */
  order?: readonly MeshAxis[];
}

export type MeshAxis = 'tp' | 'dp' | 'pp';
export const DEFAULT_MESH_ORDER: readonly MeshAxis[] = ['tp', 'dp', 'pp'];

export interface MeshCoords { dp: number; tp: number; pp: number; ep: number; edp: number }

export class ParallelDims {
  readonly world: number;
  readonly dp: number;
  readonly tp: number;
  readonly pp: number;
  readonly ep: number;
  /** dp / ep. */
  readonly edp: number;
  readonly order: readonly MeshAxis[];

  constructor(spec: ParallelDimsSpec) {
    const { world } = spec;
    const tp = spec.tp ?? 1, pp = spec.pp ?? 1, ep = spec.ep ?? 1;
    let dp = spec.dp ?? -1;
    const bad = (what: string, v: number): never => { throw new DistError(`ParallelDims: ${what} must be a positive integer, got ${v}`); };
    if (!Number.isInteger(world) || world < 1) bad('world', world);
    if (!Number.isInteger(tp) || tp < 1) bad('tp', tp);
    if (!Number.isInteger(pp) || pp < 1) bad('pp', pp);
    if (!Number.isInteger(ep) || ep < 1) bad('ep', ep);
    if (dp === -1) {
      if (world % (tp * pp) !== 0) throw new DistError(`ParallelDims: world size ${world} is not divisible by tp*pp = ${tp}*${pp} = ${tp * pp}, so dp cannot be inferred`);
      dp = world / (tp * pp);
    } else if (!Number.isInteger(dp) || dp < 1) bad('dp', dp);
    if (dp * tp * pp !== world) throw new DistError(`ParallelDims: dp*tp*pp = ${dp}*${tp}*${pp} = ${dp * tp * pp} does not equal the world size ${world}`);
    if (dp % ep !== 0) throw new DistError(`ParallelDims: ep = ${ep} must divide dp = ${dp} (expert parallelism borrows ranks from data parallelism)`);
    const order = spec.order ?? DEFAULT_MESH_ORDER;
    if (order.length !== 3 || !['tp', 'dp', 'pp'].every((a) => order.includes(a as MeshAxis))) {
      throw new DistError(`ParallelDims: order must list tp, dp and pp once each (fastest first), got [${order.join(', ')}]`);
    }
    this.order = [...order];
    this.world = world; this.dp = dp; this.tp = tp; this.pp = pp; this.ep = ep; this.edp = dp / ep;
  }

  rankOf(c: { dp: number; tp: number; pp: number }): number {
    let r = 0, stride = 1;
    for (const a of this.order) { r += c[a] * stride; stride *= this[a]; }
    return r;
  }

  coords(rank: number): MeshCoords {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.world) throw new DistError(`ParallelDims: rank ${rank} out of range [0, ${this.world})`);
    const c = { tp: 0, dp: 0, pp: 0 };
    let rest = rank;
    for (const a of this.order) { c[a] = rest % this[a]; rest = Math.floor(rest / this[a]); }
    return { ...c, ep: c.dp % this.ep, edp: Math.floor(c.dp / this.ep) };
  }

  /** Global ranks of `rank`'s group along dim, in group-rank order. */
  groupRanks(dim: MeshDim, rank: number): number[] {
    const c = this.coords(rank);
    const out: number[] = [];
    switch (dim) {
      case 'tp': for (let i = 0; i < this.tp; i++) out.push(this.rankOf({ ...c, tp: i })); break;
      case 'dp': for (let i = 0; i < this.dp; i++) out.push(this.rankOf({ ...c, dp: i })); break;
      case 'pp': for (let i = 0; i < this.pp; i++) out.push(this.rankOf({ ...c, pp: i })); break;
      case 'ep': for (let i = 0; i < this.ep; i++) out.push(this.rankOf({ ...c, dp: i + this.ep * c.edp })); break;
      case 'edp': for (let i = 0; i < this.edp; i++) out.push(this.rankOf({ ...c, dp: c.ep + this.ep * i })); break;
    }
    return out;
  }

  /** Every group along dim (for inspection and tests). */
  allGroups(dim: MeshDim): number[][] {
    const seen = new Map<string, number[]>();
    for (let r = 0; r < this.world; r++) { const g = this.groupRanks(dim, r); seen.set(g.join(','), g); }
    return [...seen.values()];
  }

  /** Creates this rank's dp/tp/pp/ep/edp communicators (every rank calls it, in the same order). */
  build(world: Communicator): DeviceMesh {
    if (world.size !== this.world) throw new DistError(`ParallelDims: configured for world size ${this.world} but the communicator has ${world.size} ranks`);
    const r = world.ranks[world.rank]!;
    const make = (d: MeshDim): Communicator => world.newGroup(this.groupRanks(d, r), d);
    return new DeviceMesh(this, this.coords(r), world, make('tp'), make('dp'), make('pp'), make('ep'), make('edp'));
  }
}

export class DeviceMesh {
  constructor(readonly dims: ParallelDims, readonly coords: MeshCoords, readonly world: Communicator,
    readonly tp: Communicator, readonly dp: Communicator, readonly pp: Communicator,
    readonly ep: Communicator, readonly edp: Communicator) {}
  get(dim: MeshDim): Communicator { return this[dim]; }
}
