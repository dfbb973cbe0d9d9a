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
// Costs: the state block on lookups (dim floats per distinct row for Adagrad) and a
// hash probe per distinct id per pending push; no extra round trip.
import { fmix64 } from './embedding-hash.js';
import type { RoutedBatch } from './embedding-client.js';
import { applyRow, type SparseOptimizerConfig } from './sparse-optimizer.js';
import { decodeValues, encodeValues, wireBytes, type WireDType } from './protocol.js';

/** One field of one push: its distinct ids (hash table) and their summed, wire-rounded gradients. */
interface PendingField {
  keys: Uint32Array; // (lo, hi) per distinct id, routing order
  table: Int32Array; // open addressing: distinct index or -1
  mask: number;
  sums: Float32Array; // nu * dim
}

/** Distinct id u of a routed batch as (lo, hi) written into out[0..1]. */
function keyOf(rb: RoutedBatch, u: number, out: Uint32Array): void {
  const r = rb.routing, ids = r.shardIds[r.uShard[u]!]!, p = 2 * r.uPos[u]!;
  out[0] = ids[p]!;
  out[1] = ids[p + 1]!;
}

export function correctionSupported(cfg: SparseOptimizerConfig): boolean {
  return cfg.kind === 'sgd' || cfg.kind === 'adagrad';
}

export class PendingGradients {
  private pushes: Array<{ step: number; fields: PendingField[] }> = [];
  private readonly key = new Uint32Array(2);
  /** Distinct rows corrected so far (counted over every replayed push). */
  corrected = 0;

  constructor(readonly dim: number, readonly wire: WireDType, readonly optimizers: SparseOptimizerConfig[]) {
    optimizers.forEach((o, f) => {
      if (!correctionSupported(o)) throw new Error(`staleness correction: field ${f} uses the '${o.kind}' sparse optimizer; replaying in-flight gradients supports 'sgd' and 'adagrad' (set train.stalenessCorrection to false)`);
    });
  }

  /** Records push `step` (per field: its routed batch and request-order gradients). */
  record(step: number, routed: RoutedBatch[], grads: Float32Array[]): void {
    const D = this.dim;
    const fields = routed.map((rb, f) => {
      const { inverse, uShard } = rb.routing;
      const nu = uShard.length;
      const sums = new Float32Array(nu * D);
      const g = grads[f]!;
      // Summed in request order, as the client sums before sending (same float32 result).
      for (let i = 0; i < rb.n; i++) {
        const o = inverse[i]! * D;
        for (let j = 0; j < D; j++) sums[o + j] += g[i * D + j]!;
      }
      if (this.wire !== 'float32') {
        const tmp = new Uint8Array(nu * D * wireBytes(this.wire));
        encodeValues(this.wire, sums, nu * D, tmp);
        decodeValues(this.wire, tmp, nu * D, sums);
      }
      let size = 16;
      while (size < 2 * nu) size *= 2;
      const mask = size - 1, table = new Int32Array(size).fill(-1), keys = new Uint32Array(2 * nu), k = this.key;
      for (let u = 0; u < nu; u++) {
        keyOf(rb, u, k);
        keys[2 * u] = k[0]!; keys[2 * u + 1] = k[1]!;
        let b = fmix64(k[1]!, k[0]!) & mask;
        while (table[b]! >= 0) b = (b + 1) & mask;
        table[b] = u;
      }
      return { keys, table, mask, sums };
    });
    this.pushes.push({ step, fields });
  }

  /**
   * Applies pushes after .. before-1 (those the lookup did not see) to the distinct
   * `rows` / `states` of each field of the batch routed as `routed`. Pushes older than
   * `after` are dropped: later lookups were all sent after them.
   */
  replay(after: number, before: number, routed: RoutedBatch[], rows: Float32Array[], states: Array<Float32Array | null>): void {
    while (this.pushes.length > 0 && this.pushes[0]!.step < after) this.pushes.shift();
    const D = this.dim, k = this.key;
    const empty = new Float32Array(0);
    for (const p of this.pushes) {
      if (p.step >= before) break;
      routed.forEach((rb, f) => {
        const pf = p.fields[f]!, cfg = this.optimizers[f]!, R = rows[f]!, S = states[f] ?? empty;
        const sw = cfg.kind === 'adagrad' ? D : 0;
        if (sw > 0 && S.length !== (R.length / D) * sw) throw new Error(`staleness correction: field ${f}: lookup returned ${S.length} state values for ${R.length / D} rows`);
        const nu = rb.routing.uShard.length;
        for (let u = 0; u < nu; u++) {
          keyOf(rb, u, k);
          let b = fmix64(k[1]!, k[0]!) & pf.mask;
          for (;;) {
            const q = pf.table[b]!;
            if (q < 0) break;
            if (pf.keys[2 * q] === k[0] && pf.keys[2 * q + 1] === k[1]) {
              applyRow(cfg, D, R, u * D, S, u * sw, pf.sums, q * D, 1);
              this.corrected++;
              break;
            }
            b = (b + 1) & pf.mask;
          }
        }
      });
    }
  }

  clear(): void { this.pushes = []; }
}
