// How a plain GPT (src/nn/gpt.ts) is cut into pipeline stages. A rank builds only the
// modules of its own stages, out of the same classes and under the same names as the
// whole model (`wte`, `h.{i}`, `ln_f`, `lm_head`), so optimizer state and checkpoints are
// keyed exactly as in single-process training and load into any layout.
//
// Initial values equal the single-process model's: the GPT draws its initialization from
// one generator in construction order, one normal per element of every matrix and nothing
// for vectors (LayerNorm and biases are constants). Modules of other stages are built on
// the meta device (no memory) and the generator is advanced past their draws instead.
import type { Tensor } from '../../core/tensor.js';
import { Rng } from '../../core/rng.js';
import { Module, type InitContext } from '../../nn/module.js';
import { Linear, LayerNorm, Embedding } from '../../nn/layers.js';
import { Block, Rope } from '../../nn/gpt.js';
import type { GptConfig } from '../../nn/gpt-config.js';
import { validateGptConfig } from '../../nn/gpt-config.js';
import { checkpoint } from '../../autograd/checkpoint.js';
import { add, slice, reshape, crossEntropy, dropout } from '../../ops/index.js';
import { partitionLayers, type StageCosts } from '../pipeline/partition.js';
import { virtualStage } from '../pipeline/schedule.js';

/** One virtual stage held by this rank. */
export interface StageChunk {
  /** Virtual stage index, 0..p·v-1. */
  stage: number;
  first: boolean;
  last: boolean;
  /** Layer range [lo, hi). */
  lo: number;
  hi: number;
}

export interface GptPipelineLayout {
  /** Pipeline ranks. */
  p: number;
  /** Chunks (virtual stages) per rank. */
  v: number;
  /** This rank's pipeline index. */
  rank: number;
}

/** Forward FLOPs per token of each piece, the partition's cost model. */
export function gptStageCosts(c: GptConfig, T = c.seqLen): StageCosts {
  const C = c.dModel, F = c.dFF, V = c.vocabSize;
  const block = 2 * (3 * C * C + C * C + 2 * C * F) + 4 * T * C;
  // The embedding is a gather + add (memory bound, ~C per token); the head is a C×V GEMM
  // plus softmax and cross-entropy over V.
  return { layers: new Array<number>(c.nLayer).fill(block), first: 2 * C, last: 2 * C * V + 5 * V };
}

/** Layer ranges of every virtual stage (p·v of them), balanced by cost. */
export function gptStagePartition(c: GptConfig, p: number, v: number): [number, number][] {
  if (c.nLayer < p * v) throw new Error(`model.nLayer (${c.nLayer}) must be at least parallel.pp × chunks = ${p} × ${v} = ${p * v} (every pipeline stage needs a layer)`);
  return partitionLayers(gptStageCosts(c), p * v);
}

/** The stages of one pipeline rank of a GPT. */
export class GptPipelineStages extends Module {
  readonly wte: Embedding | null = null;
  readonly wpe: Embedding | null = null;
  readonly blocks = new Map<number, Block>();
  readonly ln_f: LayerNorm | null = null;
  readonly lm_head: Linear | null = null;
  readonly chunks: StageChunk[];
  readonly rng: Rng;
  recompute: boolean;
  /** This rank holds the last stage and the embedding is tied: wte.weight here is a copy kept in sync with the first stage's. */
  readonly tiedCopy: boolean;
  private readonly rope: Rope | null;

  constructor(readonly cfg: GptConfig, readonly layout: GptPipelineLayout, opts: { seed?: number; recompute?: boolean } = {}) {
    super();
    validateGptConfig(cfg);
    const { p, v, rank } = layout;
    const parts = gptStagePartition(cfg, p, v);
    const S = p * v;
    this.chunks = Array.from({ length: v }, (_, c) => {
      const stage = virtualStage(p, rank, c);
      return { stage, first: stage === 0, last: stage === S - 1, lo: parts[stage]![0], hi: parts[stage]![1] };
    });
    const holdsFirst = this.chunks.some((c) => c.first), holdsLast = this.chunks.some((c) => c.last);
    const ownsLayer = (i: number) => this.chunks.some((c) => i >= c.lo && i < c.hi);
    this.tiedCopy = cfg.tieEmbeddings && holdsLast && !holdsFirst;

    this.rng = new Rng(opts.seed ?? 0);
    const real: InitContext = { device: 'cpu', dtype: 'float32', rng: this.rng };
    const meta: InitContext = { device: 'meta', dtype: 'float32', rng: this.rng };
    const rng = this.rng;
    // Builds m for real when owned; otherwise on meta, consuming the generator as a real build would.
    function build<M extends Module>(owned: boolean, make: (ctx: InitContext) => M): M | null {
      if (owned) return make(real);
      const m = make(meta);
      for (const [, t] of m.namedParameters()) if (t.ndim >= 2) for (let k = t.size; k > 0; k--) rng.normal();
      return null;
    }
    const C = cfg.dModel;
    const self = this as { wte: Embedding | null; wpe: Embedding | null; ln_f: LayerNorm | null; lm_head: Linear | null };
    self.wte = build(holdsFirst || (cfg.tieEmbeddings && holdsLast), (ctx) => new Embedding(ctx, cfg.vocabSize, C));
    if (self.wte) this.child('wte', self.wte);
    if (cfg.positions === 'learned') {
      self.wpe = build(holdsFirst, (ctx) => new Embedding(ctx, cfg.seqLen, C));
      if (self.wpe) this.child('wpe', self.wpe);
    }
    for (let i = 0; i < cfg.nLayer; i++) {
      const b = build(ownsLayer(i), (ctx) => new Block(ctx, cfg));
      if (b) this.blocks.set(i, this.child(`h.${i}`, b));
    }
    self.ln_f = build(holdsLast, (ctx) => new LayerNorm(ctx, C, cfg.lnEps));
    if (self.ln_f) this.child('ln_f', self.ln_f);
    self.lm_head = build(holdsLast, (ctx) => new Linear(ctx, C, cfg.vocabSize, { bias: false }));
    if (self.lm_head) {
      this.child('lm_head', self.lm_head);
      if (cfg.tieEmbeddings) self.lm_head.setParam('weight', self.wte!.weight);
    }
    this.rope = cfg.positions === 'rotary' ? new Rope(cfg.seqLen, C / cfg.nHead, 'float32') : null;
    this.recompute = opts.recompute ?? false;
  }

  /** Parameters whose gradients and updates this rank is responsible for (the tied copy excluded). */
  ownedParameters(): [string, Tensor][] {
    const tied = this.tiedCopy ? this.wte!.weight : null;
    return this.namedParameters().filter(([, t]) => t !== tied);
  }

  /**
   * Runs local chunk c: token ids (B, T) in on the first stage, activations (B, T, C)
   * otherwise; out: activations, or on the last stage the mean cross-entropy against
   * `targets` (B, T).
   */
  forwardChunk(c: number, input: Tensor, targets?: Tensor): Tensor {
    const ch = this.chunks[c];
    if (!ch) throw new Error(`pipeline: rank ${this.layout.rank} has no chunk ${c}`);
    let x = ch.first ? this.embed(input) : input;
    for (let i = ch.lo; i < ch.hi; i++) x = this.runBlock(i, x);
    if (!ch.last) return x;
    if (!targets) throw new Error('pipeline: the last stage needs targets');
    const logits = this.lm_head!.forward(this.ln_f!.forward(x));
    const [B, T, V] = logits.shape as [number, number, number];
    return crossEntropy(reshape(logits, [B * T, V]), reshape(targets, [B * T]));
  }

  // As GPT.embed and GPT.runBlock, on this rank's modules.
  private embed(idx: Tensor): Tensor {
    const T = idx.shape[1]!;
    if (T > this.cfg.seqLen) throw new Error(`GPT: sequence length ${T} exceeds model.seqLen ${this.cfg.seqLen}`);
    let x = this.wte!.forward(idx);
    if (this.wpe) x = add(x, slice(this.wpe.weight, 0, 0, T));
    return this.cfg.dropout > 0 ? dropout(x, this.cfg.dropout, { rng: this.rng, training: this.training }) : x;
  }

  private runBlock(i: number, x: Tensor): Tensor {
    const b = this.blocks.get(i)!;
    if (this.recompute && this.training) return checkpoint((xs) => b.forward(xs[0]!, this.rope, this.rng), [x], b.parameters(), this.rng);
    return b.forward(x, this.rope, this.rng);
  }
}
