// Staleness correction of the hybrid trainer: a trainer replays its own in-flight
// gradients on the stale rows it looked up.
//
// Why: with staleness k, batch j's rows are read right after this trainer's push j-k-1,
// so they miss its own pushes j-k .. j-1. A frequent row is in most of those batches:
// its gradient is computed k times from the same stale value, and with Adagrad the
// first updates of a new row are ~lr * sign(g) per element, so the row overshoots
// (k+1 full steps in one direction) before the trainer ever sees the first one. That,
// not the other trainers' pushes, is most of the AUC lost at k > 0.
//
// What: lookups with staleness ask the servers for each row's optimizer state as well;
// before computing batch j the trainer applies, in push order, the summed gradients of
// its pushes j-k .. j-1 (rounded to the wire dtype, as the servers receive them) to the
// rows and states it got, with the servers' own optimizer rule (sparse-optimizer.ts).
// For one trainer this is the state the servers will hold when batch j's push arrives;
// with several trainers only the other trainers' last k pushes remain unseen.
// Only ids that also appear in an in-flight batch can miss a push: at issue time the
// trainer marks them (a hash probe per distinct id per in-flight batch), the lookup asks
// the servers for those rows' state only (a mask byte per id; dim floats per marked row
// for Adagrad), and only they are replayed. No extra round trip.
import { fmix64 } from './embedding-hash.js';
import type { RoutedBatch } from './embedding-client.js';
import { applyRow, type SparseOptimizerConfig } from './sparse-optimizer.js';
import { decodeValues, encodeValues, wireBytes, type WireDType } from './protocol.js';

/** Distinct id u of a routed batch as (lo, hi) written into out[0..1]. */
function keyOf(rb: RoutedBatch, u: number, out: Uint32Array): void {
  const r = rb.routing, ids = r.shardIds[r.uShard[u]!]!, p = 2 * r.uPos[u]!;
  out[0] = ids[p]!;
  out[1] = ids[p + 1]!;
}

/** The distinct ids of one field of one batch, as an open-addressing set (routing order). */
export class IdTable {
  readonly keys: Uint32Array; // (lo, hi) per distinct id
  private readonly table: Int32Array;
  private readonly mask: number;

  constructor(readonly rb: RoutedBatch) {
    const nu = rb.routing.uShard.length;
    let size = 16;
    while (size < 2 * nu) size *= 2;
    this.mask = size - 1;
    this.table = new Int32Array(size).fill(-1);
    this.keys = new Uint32Array(2 * nu);
    const k = new Uint32Array(2);
    for (let u = 0; u < nu; u++) {
      keyOf(rb, u, k);
      this.keys[2 * u] = k[0]!; this.keys[2 * u + 1] = k[1]!;
      let b = fmix64(k[1]!, k[0]!) & this.mask;
      while (this.table[b]! >= 0) b = (b + 1) & this.mask;
      this.table[b] = u;
    }
  }

  get size(): number { return this.keys.length / 2; }

  /** Distinct index of id (lo, hi), or -1. */
  find(lo: number, hi: number): number {
    let b = fmix64(hi, lo) & this.mask;
    for (;;) {
      const q = this.table[b]!;
      if (q < 0) return -1;
      if (this.keys[2 * q] === lo && this.keys[2 * q + 1] === hi) return q;
      b = (b + 1) & this.mask;
    }
  }
}

export function correctionSupported(cfg: SparseOptimizerConfig): boolean {
  return cfg.kind === 'sgd' || cfg.kind === 'adagrad';
}

/**
 * Which distinct ids of a batch (per field) appear in any of the in-flight batches: only
 * those can miss one of this trainer's pushes, so only they ask for state and get replayed.
 */
export function idsInFlight(batch: IdTable[], inFlight: IdTable[][]): { mask: Uint8Array[]; need: Int32Array[] } {
  const mask: Uint8Array[] = [], need: Int32Array[] = [];
  batch.forEach((t, f) => {
    const m = new Uint8Array(t.size);
    const list: number[] = [];
    if (inFlight.length > 0) {
      for (let u = 0; u < t.size; u++) {
        const lo = t.keys[2 * u]!, hi = t.keys[2 * u + 1]!;
        for (const other of inFlight) if (other[f]!.find(lo, hi) >= 0) { m[u] = 1; list.push(u); break; }
      }
    }
    mask.push(m);
    need.push(Int32Array.from(list));
  });
  return { mask, need };
}

export class PendingGradients {
  private pushes: Array<{ step: number; tables: IdTable[]; sums: Float32Array[] }> = [];
  /** Row updates replayed so far. */
  corrected = 0;

  constructor(readonly dim: number, readonly wire: WireDType, readonly optimizers: SparseOptimizerConfig[]) {
    optimizers.forEach((o, f) => {
      if (!correctionSupported(o)) throw new Error(`staleness correction: field ${f} uses the '${o.kind}' sparse optimizer; replaying in-flight gradients supports 'sgd' and 'adagrad' (set train.stalenessCorrection to false)`);
    });
  }

  /** Records push `step`: per field, its id set and request-order gradients (summed per distinct id here). */
  record(step: number, tables: IdTable[], grads: Float32Array[]): void {
    const D = this.dim;
    const sums = tables.map((t, f) => {
      const { inverse } = t.rb.routing;
      const nu = t.size;
      const out = new Float32Array(nu * D);
      const g = grads[f]!;
      // Summed in request order, as the client sums before sending (same float32 result).
      for (let i = 0; i < t.rb.n; i++) {
        const o = inverse[i]! * D;
        for (let j = 0; j < D; j++) out[o + j] += g[i * D + j]!;
      }
      if (this.wire !== 'float32') {
        const tmp = new Uint8Array(nu * D * wireBytes(this.wire));
        encodeValues(this.wire, out, nu * D, tmp);
        decodeValues(this.wire, tmp, nu * D, out);
      }
      return out;
    });
    this.pushes.push({ step, tables, sums });
  }

  /**
   * Applies pushes after .. before-1 (those the lookup did not see) to the distinct rows
   * listed in `need` (per field) of `batch`, whose `rows` / `states` (u * dim, u * stateWidth)
   * came with the lookup. Pushes older than `after` are dropped: later lookups all saw them.
   */
  replay(after: number, before: number, batch: IdTable[], need: Int32Array[], rows: Float32Array[], states: Array<Float32Array | null>): void {
    while (this.pushes.length > 0 && this.pushes[0]!.step < after) this.pushes.shift();
    const D = this.dim;
    const empty = new Float32Array(0);
    for (const p of this.pushes) {
      if (p.step >= before) break;
      batch.forEach((t, f) => {
        const pt = p.tables[f]!, cfg = this.optimizers[f]!, R = rows[f]!, S = states[f] ?? empty, sums = p.sums[f]!;
        const sw = cfg.kind === 'adagrad' ? D : 0;
        if (sw > 0 && S.length !== t.size * sw) throw new Error(`staleness correction: field ${f}: lookup returned ${S.length} state values for ${t.size} rows`);
        for (const u of need[f]!) {
          const q = pt.find(t.keys[2 * u]!, t.keys[2 * u + 1]!);
          if (q < 0) continue;
          applyRow(cfg, D, R, u * D, S, u * sw, sums, q * D, 1);
          this.corrected++;
        }
      });
    }
  }

  clear(): void { this.pushes = []; }
}
