// The model side of hybrid training (hybrid-trainer.ts): the DLRM's forward and backward
// over a batch's embedding rows as the servers returned them, giving the row gradients to
// push, and evaluation with read-only lookups. No pipeline state: the trainer owns that.
import { backward, noGrad } from '../autograd/tape.js';
import { scope } from '../core/scope.js';
import { fromStorage, type Tensor } from '../core/tensor.js';
import type { EmbeddingClient } from './embedding-client.js';
import type { RecBatch } from './criteo.js';
import { type DLRM, bceWithLogits, embeddingBag, rowsLeaf } from './dlrm.js';
import { aucExact, logLoss } from './metrics.js';
import type { EvalReport } from './hybrid-options.js';

/** Every field has exactly one id per sample (no bags): the rows fit one (F, B, D) buffer. */
export function oneHot(b: RecBatch): boolean {
  return !b.offsets || b.offsets.every((o) => o === undefined);
}

export interface StepGrads {
  loss: number;
  /** Per-field row gradients (blocks of `all` with `flat`). */
  grads: Float32Array[];
  /** With `flat`: all fields' row gradients in one (F, B, D) buffer; else null. */
  all: Float32Array | null;
  /** What the push still multiplies the gradients by (1 when they came back scaled). */
  scale: number;
}

/**
 * Forward + backward of one batch over F fields of dim-D rows; returns the loss and per-field
 * row gradients, multiplied by `scale` before the push: here when `scaled` (the correction
 * replays them), else by pushGrads while it sums them per server (one pass fewer over every
 * gradient). With `flat` (one-hot fields, rows[f] are its blocks) the model takes all fields
 * as one (F, B, D) leaf and the gradients come back as blocks of one buffer (`into` when given).
 */
export function forwardBackward(model: DLRM, batch: RecBatch, rows: Float32Array[], D: number, F: number, scale: number,
  scaled: boolean, flat: Float32Array | null, into: Float32Array | null): StepGrads {
  const B = batch.size;
  // A copy (the gradient buffer goes back to the pool): into `into` when given, else fresh.
  const copyGrad = (g: Tensor | null, len: number, dst: Float32Array | null = null): Float32Array => {
    const out = dst ?? new Float32Array(len);
    if (!g) { if (dst) out.fill(0); return out; }
    const d = g.data as Float32Array;
    if (scaled) for (let i = 0; i < len; i++) out[i] = d[i]! * scale;
    else out.set(d.subarray(0, len));
    return out;
  };
  return scope(() => {
    const dense = fromStorage(batch.dense, [B, model.cfg.numDense], 'float32');
    const grads: Float32Array[] = [];
    let lv: number, all: Float32Array | null = null;
    if (flat) {
      const leaf = fromStorage(flat, [F, B, D], 'float32');
      leaf.requiresGrad = true;
      const loss = bceWithLogits(model.forward(dense, leaf), batch.labels);
      lv = loss.item();
      backward(loss);
      all = copyGrad(leaf.grad, F * B * D, into);
      leaf.grad?.dispose();
      leaf.grad = null;
      for (let f = 0; f < F; f++) grads.push(all.subarray(f * B * D, (f + 1) * B * D));
    } else {
      const leaves = rows.map((r) => rowsLeaf(r, r.length / D, D));
      const emb = leaves.map((l, f) => embeddingBag(l, batch.offsets?.[f], B, model.cfg.pooling ?? 'sum'));
      const loss = bceWithLogits(model.forward(dense, emb), batch.labels);
      lv = loss.item();
      backward(loss);
      for (let f = 0; f < F; f++) {
        grads.push(copyGrad(leaves[f]!.grad, rows[f]!.length));
        leaves[f]!.grad?.dispose();
        leaves[f]!.grad = null;
      }
    }
    return { loss: lv, grads, all, scale: scaled ? 1 : scale };
  });
}

/**
 * AUC and log-loss of the model over batches, with read-only lookups of the fields' groups
 * (the next batch's lookups overlap this batch's compute).
 */
export async function evaluateModel(model: DLRM, client: EmbeddingClient, groups: number[], dim: number,
  batches: AsyncIterable<RecBatch> | Iterable<RecBatch>): Promise<EvalReport> {
  const scores: number[] = [], labels: number[] = [];
  // One-hot batches are read into one (F, B, D) buffer, as in training.
  type Looked = { b: RecBatch; rows: Promise<Float32Array[]>; flat: Float32Array | null };
  const look = (b: RecBatch): Looked => {
    const block = b.size * dim;
    const flat = oneHot(b) ? new Float32Array(groups.length * block) : null;
    const rows = flat ? client.lookupFields(client.routeFields(groups, b.sparse), flat, { readOnly: true }).then(() => [])
      : Promise.all(groups.map((g, f) => client.lookup(g, b.sparse[f]!, { readOnly: true })));
    return { b, rows, flat };
  };
  let prev: Looked | null = null;
  const run = async (p: Looked): Promise<void> => {
    const rows = await p.rows;
    const B = p.b.size, D = dim, F = groups.length;
    const logits = noGrad(() => scope(() => {
      const emb = p.flat ? fromStorage(p.flat, [F, B, D], 'float32')
        : rows.map((r, f) => embeddingBag(fromStorage(r, [r.length / D, D], 'float32'), p.b.offsets?.[f], B, model.cfg.pooling ?? 'sum'));
      const y = model.forward(fromStorage(p.b.dense, [B, model.cfg.numDense], 'float32'), emb);
      return Float32Array.from(y.data as Float32Array);
    }));
    for (let i = 0; i < B; i++) { scores.push(logits[i]!); labels.push(p.b.labels[i]!); }
  };
  for await (const b of batches as AsyncIterable<RecBatch>) {
    const cur = look(b);
    cur.rows.catch(() => undefined);
    if (prev) await run(prev);
    prev = cur;
  }
  if (prev) await run(prev);
  let pos = 0;
  for (const y of labels) pos += y;
  return { auc: aucExact(scores, labels), logLoss: logLoss(scores, labels), samples: scores.length, positives: pos };
}
