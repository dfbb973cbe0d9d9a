// How a plain GPT (src/nn/gpt.ts) is cut into pipeline stages. The GPT is declared on
// the meta device and only the parameters of this rank's stages are materialized (each
// from its own (seed, name) stream, so they equal the single-process values; with tensor
// parallelism, only this rank's shards of them). The stage module registers the GPT's
// own submodules under their names (`wte`, `h.{i}`, `ln_f`, `lm_head`), so optimizer
// state and checkpoints are keyed as in single-process training and load into any layout.
import type { Tensor } from '../../core/tensor.js';
import type { Rng } from '../../core/rng.js';
import { Module } from '../../nn/module.js';
import { GPT } from '../../nn/gpt.js';
import type { GptConfig } from '../../nn/gpt-config.js';
import { materialize, type ShardRequest } from '../../nn/materialize.js';
import { add, reshape, crossEntropy } from '../../ops/index.js';
import type { MoeMlp, MoeStats } from '../../nn/moe.js';
import { vocabParallelCrossEntropy, type GroupCollectives } from '../../ops/group.js';
import type { Shard } from '../placement.js';
import { buildTensorParallelGpt } from './gpt.js';
import { partitionLayers, type StageCosts } from '../pipeline/partition.js';
import { virtualStage } from '../pipeline/schedule.js';
import { releaseActivation } from '../../autograd/saved-pack.js';

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

export interface GptStageOptions {
  seed: number;
  recompute: boolean;
  /** Tensor parallelism inside every stage (Megatron layout of plans/gpt.ts). */
  tp?: { group: GroupCollectives; sequenceParallel: boolean };
  /** Further sharding of the held parameters without tp (expert parallelism: this rank's experts). */
  shard?: (name: string, meta: Tensor) => ShardRequest | null;
}

/** The stages of one pipeline rank of a GPT. */
export class GptPipelineStages extends Module {
  readonly wte: GPT['wte'] | null = null;
  readonly chunks: StageChunk[];
  /** This rank holds the last stage and the embedding is tied: wte.weight here is a copy kept in sync with the first stage's. */
  readonly tiedCopy: boolean;
  /** Tensor-parallel placement of this rank's split parameters (empty without tp). */
  readonly shards: Map<string, Shard>;
  private readonly model: GPT;
  /** The MoE auxiliary losses of the last non-last chunk forward (taken by the engine). */
  private chunkAux: Tensor | null = null;

  constructor(readonly cfg: GptConfig, readonly layout: GptPipelineLayout, private readonly opts: GptStageOptions) {
    super();
    const { p, v, rank } = layout;
    const parts = gptStagePartition(cfg, p, v);
    const S = p * v;
    this.chunks = Array.from({ length: v }, (_, c) => {
      const stage = virtualStage(p, rank, c);
      return { stage, first: stage === 0, last: stage === S - 1, lo: parts[stage]![0], hi: parts[stage]![1] };
    });
    const first = this.chunks.some((c) => c.first), last = this.chunks.some((c) => c.last);
    const layers = new Set<number>();
    for (const c of this.chunks) for (let i = c.lo; i < c.hi; i++) layers.add(i);
    this.tiedCopy = cfg.tieEmbeddings && last && !first;
    // A tied head is the embedding tensor (initialized from the 'wte.weight' stream).
    const holdsWte = first || (cfg.tieEmbeddings && last);
    const holds = (name: string): boolean => {
      const m = /^h\.(\d+)\./.exec(name);
      if (m) return layers.has(Number(m[1]));
      if (name.startsWith('wte.')) return holdsWte;
      if (name.startsWith('wpe.')) return first;
      return last; // ln_f, lm_head
    };
    if (opts.tp) {
      if (opts.shard) throw new Error('pipeline stages: tensor parallelism does not combine with a further shard (expert parallelism)');
      const built = buildTensorParallelGpt(cfg, opts.tp.group, { seed: opts.seed, recompute: opts.recompute, sequenceParallel: opts.tp.sequenceParallel, holds });
      this.model = built.model;
      this.shards = built.shards;
    } else {
      this.model = new GPT(cfg, { seed: opts.seed, recompute: opts.recompute, deferInit: true });
      materialize(this.model, opts.seed, (name, meta) => (holds(name) ? opts.shard?.(name, meta) ?? null : 'absent'));
      this.shards = new Map();
    }
    const g = this.model;
    if (holdsWte) (this as { wte: GPT['wte'] | null }).wte = this.child('wte', g.wte);
    if (first && g.wpe) this.child('wpe', g.wpe);
    for (const i of [...layers].sort((a, b) => a - b)) this.child(`h.${i}`, g.h[i]!);
    if (last) { this.child('ln_f', g.ln_f); this.child('lm_head', g.lm_head); }
  }

  /** The generator dropout draws from (saved in checkpoints). */
  get rng(): Rng { return this.model.rng; }

  get recompute(): boolean { return this.model.recompute; }
  set recompute(on: boolean) { this.model.recompute = on; }

  /** Activation shape between stages for a micro-batch of rows × T (split along T under sequence parallelism). */
  activationShape(rows: number, T: number): number[] {
    const sp = this.opts.tp?.sequenceParallel ? this.opts.tp.group.size : 1;
    return [rows, T / sp, this.cfg.dModel];
  }

  /**
   * Runs local chunk c: token ids (B, T) in on the first stage, activations otherwise;
   * out: activations, or on the last stage the mean cross-entropy against `targets` (B, T).
   */
  forwardChunk(c: number, input: Tensor, targets?: Tensor): Tensor {
    const ch = this.chunks[c];
    if (!ch) throw new Error(`pipeline: rank ${this.layout.rank} has no chunk ${c}`);
    const g = this.model;
    let x = ch.first ? g.embed(input) : input;
    // As GPT.forward: an activation no later forward reads is released (a no-op unless
    // every backward reader kept a bf16 copy; the stage input is a leaf and stays).
    for (let i = ch.lo; i < ch.hi; i++) {
      const nx = g.runBlock(i, x);
      releaseActivation(x);
      x = nx;
    }
    // MoE blocks' auxiliary losses (training forwards only), in block order as GPT.loss adds
    // them: the last stage adds its own to the loss; any other stage hands them to the
    // engine, which backpropagates them beside the gradient it receives.
    const aux: Tensor[] = [];
    for (let i = ch.lo; i < ch.hi; i++) {
      const m = g.h[i]!.moe;
      if (m?.auxLoss) { aux.push(m.auxLoss); m.auxLoss = null; }
    }
    if (!ch.last) { this.chunkAux = aux.length ? aux.reduce((a, b) => add(a, b)) : null; return x; }
    if (!targets) throw new Error('pipeline: the last stage needs targets');
    const logits = g.head(x);
    releaseActivation(x);
    const [B, T, Vl] = logits.shape as [number, number, number];
    const tp = this.opts.tp;
    // Under tensor parallelism the logits stay split by vocabulary (as plans/gpt.ts's loss).
    let loss = tp && tp.group.size > 1
      ? vocabParallelCrossEntropy(reshape(logits, [B * T, Vl]), reshape(targets, [B * T]), tp.group, tp.group.rank * Vl, this.cfg.vocabSize)
      : crossEntropy(reshape(logits, [B * T, Vl]), reshape(targets, [B * T]));
    for (const a of aux) loss = add(loss, a);
    return loss;
  }

  /** The auxiliary losses of the last forwardChunk of a non-last chunk (null: none); clears them. */
  takeChunkAux(): Tensor | null {
    const a = this.chunkAux;
    this.chunkAux = null;
    return a;
  }

  /** Every MoE layer of the whole model in block order (absent layers on the meta device). */
  private allMoe(): MoeMlp[] { return this.model.moeLayers(); }

  /** The MoE layers this rank's stages run, in block order. */
  moeLayers(): MoeMlp[] {
    const held = new Set(this.chunks.flatMap((c) => this.model.h.slice(c.lo, c.hi).flatMap((b) => (b.moe ? [b.moe] : []))));
    return this.allMoe().filter((m) => held.has(m));
  }

  /** Index of each of moeLayers() among all MoE layers of the model, and their count. */
  moeLayout(): { indices: number[]; total: number } {
    const all = this.allMoe();
    return { indices: this.moeLayers().map((m) => all.indexOf(m)), total: all.length };
  }

  /** Routing statistics of this rank's MoE layers since the last call (resets them). */
  takeMoeStats(): MoeStats[] {
    return this.moeLayers().map((m) => m.takeStats());
  }
}
