// DLRM (Naumov et al. 2019), dense part only: the embedding tables live on the
// embedding servers, so the model receives each field's rows as tensors (leaves with
// requiresGrad) and backward leaves their gradients in `.grad` to be pushed back.
//
//   x   = bottom MLP(dense)                                  (B, D)   ReLU after every layer
//   e_f = bag(rows_f, offsets_f)                             (B, D)   sum or mean pooling
//   Z   = stack(x, e_1 .. e_F)                               (B, M, D), M = F + 1
//   p   = upper triangle (i < j) of Z Z^T                    (B, M(M-1)/2)
//   logit = top MLP(concat(x, p))                            (B)      ReLU between layers
//   loss  = mean BCE-with-logits
// concat(x, p) is one fused op (dotInteraction: a C kernel, not B tiny GEMMs); the rest
// are existing differentiable ops, so gradients come from the one rule table.
import { type Tensor, fromStorage, zeros } from '../core/tensor.js';
import type { DType } from '../core/dtype.js';
import { Rng } from '../core/rng.js';
import { Module, type Device, type InitContext } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import { concat, crossEntropy, matmul, relu, reshape } from '../ops/index.js';
import { dotInteraction } from '../ops/dot-interaction.js';

export interface DlrmConfig {
  numDense: number;
  numSparse: number;
  /** D: embedding width, also the bottom MLP's output width. */
  embDim: number;
  /** Hidden widths of the bottom MLP (its output layer, of width embDim, is added). */
  bottom: number[];
  /** Hidden widths of the top MLP (its output layer, of width 1, is added). */
  top: number[];
  pooling?: 'sum' | 'mean';
  seed?: number;
  dtype?: DType;
  /** 'meta' builds shapes only (the planner traces the model this way). */
  device?: Device;
}

function mlp(m: Module & { addLayer(name: string, l: Linear): Linear }, ctx: InitContext, prefix: string, sizes: number[]): Linear[] {
  const out: Linear[] = [];
  for (let i = 0; i + 1 < sizes.length; i++) {
    const fin = sizes[i]!, fout = sizes[i + 1]!;
    // DLRM's init: N(0, sqrt(2 / (fan_in + fan_out))).
    out.push(m.addLayer(`${prefix}.${i}`, new Linear(ctx, fin, fout, { std: Math.sqrt(2 / (fin + fout)) })));
  }
  return out;
}

class Seq extends Module {
  addLayer(name: string, l: Linear): Linear { return this.child(name.split('.').pop()!, l); }
}

export class DLRM extends Module {
  readonly bottom: Linear[];
  readonly top: Linear[];
  readonly numPairs: number;

  constructor(readonly cfg: DlrmConfig) {
    super();
    const ctx: InitContext = { device: cfg.device ?? 'cpu', dtype: cfg.dtype ?? 'float32', rng: new Rng(cfg.seed ?? 0) };
    const M = cfg.numSparse + 1;
    this.numPairs = (M * (M - 1)) / 2;
    const bot = this.child('bot', new Seq());
    const top = this.child('top', new Seq());
    this.bottom = mlp(bot, ctx, 'bot', [cfg.numDense, ...cfg.bottom, cfg.embDim]);
    this.top = mlp(top, ctx, 'top', [cfg.embDim + this.numPairs, ...cfg.top, 1]);
    for (const [n, p] of this.namedParameters()) p.name = n;
  }

  /**
   * dense (B, numDense) and the pooled field embeddings → logits (B). `emb` is either one
   * (B, D) tensor per field, or all fields at once as one field-major (F, B, D) tensor
   * (what a trainer with one id per field gets from a single lookup buffer: no stacking).
   */
  forward(dense: Tensor, emb: readonly Tensor[] | Tensor): Tensor {
    const B = dense.shape[0]!, D = this.cfg.embDim, F = this.cfg.numSparse;
    let e: Tensor;
    if (Array.isArray(emb)) {
      const list = emb as readonly Tensor[];
      if (list.length !== F) throw new Error(`DLRM: got ${list.length} embedding fields, configured for ${F}`);
      e = concat(list.map((t) => reshape(t, [1, B, D])), 0);
    } else {
      e = emb as Tensor;
      if (e.ndim !== 3 || e.shape[0] !== F || e.shape[1] !== B || e.shape[2] !== D) throw new Error(`DLRM: embeddings of shape [${e.shape.join(', ')}], expected [${F}, ${B}, ${D}] (fields, batch, embDim)`);
    }
    let x = dense;
    for (const l of this.bottom) x = relu(l.forward(x));
    // [x, <z_i, z_j> for i < j] with z = (x, e_1 .. e_F): one fused op (ops/dot-interaction.ts).
    let h = dotInteraction(x, e);
    this.top.forEach((l, i) => { h = l.forward(h); if (i + 1 < this.top.length) h = relu(h); });
    return reshape(h, [B]);
  }
}

/**
 * Pools one field's rows into (B, D). rows (n, D) holds one row per id of the field
 * in request order; offsets (B + 1) gives sample b the ids [offsets[b], offsets[b+1]).
 * Without offsets every sample has exactly one id and rows is returned as is. Bags are
 * a (B, n) pooling matrix times rows: differentiable, and cheap for CTR-sized bags.
 */
export function embeddingBag(rows: Tensor, offsets: Int32Array | undefined, B: number, mode: 'sum' | 'mean' = 'sum'): Tensor {
  const n = rows.shape[0]!;
  if (!offsets) {
    if (n !== B) throw new Error(`embeddingBag: ${n} rows for ${B} samples without offsets`);
    return rows;
  }
  if (offsets.length !== B + 1 || offsets[0] !== 0 || offsets[B] !== n) throw new Error(`embeddingBag: offsets must have ${B + 1} entries from 0 to ${n}`);
  const P = zeros([B, n], rows.dtype);
  const pd = P.data;
  for (let b = 0; b < B; b++) {
    const s = offsets[b]!, e = offsets[b + 1]!;
    if (e < s) throw new Error(`embeddingBag: offsets decrease at sample ${b}`);
    const w = mode === 'mean' && e > s ? 1 / (e - s) : 1;
    for (let i = s; i < e; i++) pd[b * n + i] = w;
  }
  return matmul(P, rows);
}

/** Mean binary cross-entropy of logits (B) against 0/1 labels: softmax cross-entropy over [0, logit]. */
export function bceWithLogits(logits: Tensor, labels: ArrayLike<number>): Tensor {
  const B = logits.shape[0]!;
  if (labels.length !== B) throw new Error(`bceWithLogits: ${labels.length} labels for ${B} logits`);
  const t = new Int32Array(B);
  for (let i = 0; i < B; i++) t[i] = labels[i]! > 0.5 ? 1 : 0;
  const two = concat([zeros([B, 1], logits.dtype), reshape(logits, [B, 1])], 1);
  return crossEntropy(two, fromStorage(t, [B], 'int32'));
}

/** Wraps server rows as a trainable leaf: backward leaves d(loss)/d(rows) in `.grad`. */
export function rowsLeaf(rows: Float32Array | Float64Array, n: number, dim: number): Tensor {
  const t = fromStorage(rows, [n, dim], rows instanceof Float64Array ? 'float64' : 'float32');
  t.requiresGrad = true;
  return t;
}
