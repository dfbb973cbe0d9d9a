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
// Everything is composed of existing differentiable ops (linear, matmul, gather,
// concat, crossEntropy), so gradients come from the one rule table.
import { Tensor, fromStorage, zeros } from '../core/tensor.js';
import type { DType } from '../core/dtype.js';
import { Rng } from '../core/rng.js';
import { Module, type Device, type InitContext } from '../nn/module.js';
import { Linear } from '../nn/layers.js';
import { concat, crossEntropy, gather, matmul, relu, reshape } from '../ops/index.js';

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
  private pairIndex: Tensor | null = null;

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

  /** Indices of Z Z^T's strict upper triangle in its flattened (M*M) rows, one row per sample. */
  private pairs(B: number): Tensor {
    if (this.pairIndex && this.pairIndex.shape[0]! >= B) return B === this.pairIndex.shape[0] ? this.pairIndex : this.pairIndex.view([B, this.numPairs], this.pairIndex.strides, 0);
    const M = this.cfg.numSparse + 1, P = this.numPairs;
    const idx = new Int32Array(B * P);
    let k = 0;
    for (let i = 0; i < M; i++) for (let j = i + 1; j < M; j++) idx[k++] = i * M + j;
    for (let b = 1; b < B; b++) idx.copyWithin(b * P, 0, P);
    this.pairIndex?.dispose();
    this.pairIndex = fromStorage(idx, [B, P], 'int32').keep();
    return this.pairIndex;
  }

  /** dense (B, numDense); emb[f] (B, D) pooled field embeddings → logits (B). */
  forward(dense: Tensor, emb: readonly Tensor[]): Tensor {
    const B = dense.shape[0]!, D = this.cfg.embDim, M = this.cfg.numSparse + 1;
    if (emb.length !== this.cfg.numSparse) throw new Error(`DLRM: got ${emb.length} embedding fields, configured for ${this.cfg.numSparse}`);
    let x = dense;
    for (const l of this.bottom) x = relu(l.forward(x));
    const z = concat([reshape(x, [B, 1, D]), ...emb.map((e) => reshape(e, [B, 1, D]))], 1);
    const g = reshape(matmul(z, z, { transB: true }), [B, M * M]);
    const p = gather(g, this.pairs(B), 1);
    let h = concat([x, p], 1);
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
