// How parallelism is applied to the GPT of src/nn/gpt.ts (torchtitan's parallelize.py):
// which submodules are ZeRO-3 gather units, which linears are column- or row-parallel,
// where the vocabulary is split. Everything GPT-specific in the parallel layer is here;
// the transforms themselves (data-parallel.ts, zero3.ts, ...) see plain modules.
import type { Tensor } from '../../core/tensor.js';
import { GPT } from '../../nn/gpt.js';
import type { GptConfig } from '../../nn/gpt-config.js';
import { wrapMethod } from '../../nn/module.js';
import { materialize } from '../../nn/materialize.js';
import { add, slice, reshape, dropout } from '../../ops/index.js';
import { groupCopy, vocabParallelCrossEntropy, type GroupCollectives } from '../../ops/group.js';
import { replicate, fullyShard, type DataParallel, type GradComm } from '../data-parallel.js';
import { globalRuns, localShape, type Shard } from '../placement.js';
import { moeShardOf, tensorParallelMoe, validateMoeTensorParallel } from '../moe-tensor-parallel.js';
import { regionEntry, rowParallel, sequenceParallelColumn, columnParallelWithEntry, vocabParallelEmbedding, sequenceParallelNorm } from '../tensor-parallel.js';

export interface GptDataParallelOptions {
  zero: 0 | 1 | 2 | 3;
  bucketMB: number;
  deterministic: boolean;
  transport?: string;
  /** ZeRO-3 over a GPT built on the meta device (deferInit): its init seed, so each rank materializes only its shard. */
  seed?: number;
  /** ZeRO-3: prefetch the next block's gather (default true). */
  prefetch?: boolean;
  /** HSDP: the replica group (comm/rank/world are then the shard group's); see hsdp.ts. */
  replica?: { comm: GradComm; rank: number; size: number };
}

/** Data parallelism over the data-parallel group: replicate (ZeRO 0-2) or fully-shard (ZeRO-3, one unit per block). */
export function applyDataParallel(model: GPT, comm: GradComm, rank: number, world: number, o: GptDataParallelOptions): DataParallel {
  if (o.zero === 3) {
    // ZeRO-3 recomputes every block in backward already; a second recomputation would only cost time.
    model.recompute = false;
    // Units in forward order. Untied, the token embedding and the LM head are units of their
    // own (each V × C, often the largest tensors): gathered around the lookup and around the
    // head GEMM instead of held for the whole step. A tied matrix is used at both ends, so it
    // stays in the outer unit with the position table and the final norm.
    const units = model.cfg.tieEmbeddings ? [...model.h] : [model.wte, ...model.h, model.lm_head];
    return fullyShard(model, comm, rank, world, { bucketMB: o.bucketMB, deterministic: o.deterministic, transport: o.transport, units, rng: model.rng, seed: o.seed, prefetch: o.prefetch, replica: o.replica });
  }
  return replicate(model, comm, rank, world, { zero: o.zero, bucketMB: o.bucketMB, deterministic: o.deterministic, transport: o.transport, seed: o.seed });
}

/**
 * Which GPT parameters tensor parallelism splits, and how (Megatron's layout): the
 * fused QKV projection by heads (q, k and v each split, dim 0 in 3 blocks), the MLP's
 * first linear by F (dim 0), both output projections by their input (dim 1), and the
 * token embedding / LM head by vocabulary (dim 0). Norms, biases of the row-parallel
 * projections and the position table are replicated.
 */
export function gptShardOf(name: string, shape: readonly number[], rank: number, size: number): Shard | null {
  if (size === 1) return null;
  const s = (dim: number, blocks = 1): Shard => ({ globalShape: shape, dim, blocks, rank, size });
  if (/\.attn\.c_attn\.(weight|bias)$/.test(name)) return s(0, 3);
  if (/\.mlp\.c_fc\.(weight|bias)$/.test(name)) return s(0);
  if (/\.(attn|mlp)\.c_proj\.weight$/.test(name)) return s(1);
  if (name === 'wte.weight' || name === 'lm_head.weight') return s(0);
  return moeShardOf(name, shape, rank, size);
}

/** Checks that a GPT config splits over `tp` ranks, naming the offending field. */
export function validateGptTensorParallel(m: GptConfig, tp: number, sequenceParallel: boolean): void {
  if (tp === 1) return;
  if (m.nHead % tp !== 0) throw new Error(`model.nHead (${m.nHead}) must be divisible by parallel.tp (${tp}): attention is split by heads`);
  if (m.dFF % tp !== 0) throw new Error(`model.dFF (${m.dFF}) must be divisible by parallel.tp (${tp}): the MLP is split by its hidden width`);
  if (m.vocabSize % tp !== 0) throw new Error(`model.vocabSize (${m.vocabSize}) must be divisible by parallel.tp (${tp}): the embedding and head are split by vocabulary`);
  if (sequenceParallel && m.seqLen % tp !== 0) throw new Error(`model.seqLen (${m.seqLen}) must be divisible by parallel.tp (${tp}) when parallel.sp=true: sequence parallelism splits the sequence`);
  validateMoeTensorParallel(m, tp, sequenceParallel);
}

export interface GptTensorParallelOptions {
  seed: number;
  recompute: boolean;
  sequenceParallel: boolean;
  /** Parameters this rank holds (pipeline parallelism: its stages'); default all. */
  holds?: (name: string) => boolean;
}

/**
 * Builds this rank's tensor-parallel GPT: the plain model on the meta device, each
 * parameter materialized as this rank's shard of the single-process values, then the
 * column/row/vocab-parallel transforms installed through module hooks. Returns the
 * model and the placement of every split parameter (for norms and checkpoints).
 */
export function buildTensorParallelGpt(cfg: GptConfig, group: GroupCollectives, o: GptTensorParallelOptions): { model: GPT; shards: Map<string, Shard> } {
  const { rank, size } = group;
  const sp = o.sequenceParallel;
  validateGptTensorParallel(cfg, size, sp);
  const model = new GPT(cfg, { seed: o.seed, recompute: o.recompute, deferInit: true });
  const shards = new Map<string, Shard>();
  materialize(model, o.seed, (name, meta) => {
    if (o.holds && !o.holds(name)) return 'absent';
    const s = gptShardOf(name, meta.shape, rank, size);
    if (!s) return null;
    shards.set(name, s);
    return { shape: localShape(s), runs: globalRuns(s) };
  });
  if (size === 1) return { model, shards };
  for (const b of model.h) {
    // Under sp the all-gather is fused with the first GEMM of each region and redone in
    // backward, so the block holds only its sequence shard (attention and MLP read x only there).
    if (sp) sequenceParallelColumn(b.attn.c_attn, group); else regionEntry(b.attn, group, sp);
    rowParallel(b.attn.c_proj, group, sp);
    // An MoE block: replicated router, experts split over F (moe-tensor-parallel.ts).
    if (b.moe) tensorParallelMoe(b.moe, group);
    else {
      if (sp) sequenceParallelColumn(b.mlp.c_fc, group); else regionEntry(b.mlp, group, sp);
      rowParallel(b.mlp.c_proj, group, sp);
    }
    if (sp) { sequenceParallelNorm(b.ln_1, group); sequenceParallelNorm(b.ln_2, group); }
  }
  const V = cfg.vocabSize, Vl = V / size;
  vocabParallelEmbedding(model.wte, group, rank * Vl, sp);
  if (sp) {
    sequenceParallelNorm(model.ln_f, group);
    // The embedding output is reduce-scattered along the sequence: add this rank's rows
    // of the position table (summed over the group in backward: every rank used some).
    wrapMethod(model, 'embed', () => (idx: Tensor) => {
      const T = idx.shape[1]!, Tl = T / size;
      let x = model.wte.forward(idx);
      if (model.wpe) x = add(x, slice(groupCopy(slice(model.wpe.weight, 0, 0, T), group), 0, rank * Tl, (rank + 1) * Tl));
      return cfg.dropout > 0 ? dropout(x, cfg.dropout, { rng: model.rng, training: model.training }) : x;
    });
  }
  columnParallelWithEntry(model.lm_head, group, sp);
  // The head's logits stay split by vocabulary: the loss is the vocab-parallel cross-entropy.
  wrapMethod(model, 'loss', () => (idx: Tensor, targets: Tensor) => {
    const logits = model.forward(idx);
    const [B, T] = logits.shape as [number, number, number];
    let l = vocabParallelCrossEntropy(reshape(logits, [B * T, Vl]), reshape(targets, [B * T]), group, rank * Vl, V);
    // As GPT.loss: the MoE blocks' auxiliary losses (replicated, identical on every rank).
    for (const m of model.moeLayers()) if (m.auxLoss) { l = add(l, m.auxLoss); m.auxLoss = null; }
    return l;
  });
  return { model, shards };
}
