// GPT model configuration and its closed-form parameter count (the oracle for the
// meta-device count in tests and for `athanor train --dry-run`).
import { type MoeConfig, isMoeBlock, moeLayerParams, moeLayerFlops, validateMoeConfig } from './moe-config.js';

export interface GptConfig {
  nLayer: number;
  nHead: number;
  /** C: model width. */
  dModel: number;
  /** F: feed-forward width. */
  dFF: number;
  /** V */
  vocabSize: number;
  /** T: maximum sequence length (context). */
  seqLen: number;
  tieEmbeddings: boolean;
  positions: 'learned' | 'rotary';
  dropout: number;
  lnEps: number;
  /** Mixture of experts (moe-config.ts); absent or experts = 0: dense. */
  moe?: MoeConfig;
}

export function validateGptConfig(c: GptConfig, where = 'model'): void {
  const pos = (k: keyof GptConfig) => {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v <= 0) throw new Error(`${where}.${k} must be a positive integer, got ${v}`);
  };
  (['nLayer', 'nHead', 'dModel', 'dFF', 'vocabSize', 'seqLen'] as const).forEach(pos);
  if (c.dModel % c.nHead !== 0) throw new Error(`${where}.dModel (${c.dModel}) must be divisible by ${where}.nHead (${c.nHead})`);
  if (c.positions === 'rotary' && (c.dModel / c.nHead) % 2 !== 0) throw new Error(`${where}: rotary positions need an even head width, got ${c.dModel / c.nHead}`);
  if (c.positions !== 'learned' && c.positions !== 'rotary') throw new Error(`${where}.positions must be 'learned' or 'rotary', got '${c.positions}'`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new Error(`${where}.dropout must be in [0, 1), got ${c.dropout}`);
  validateMoeConfig(c.moe, c.nLayer, `${where}.moe`);
}

/** Closed form: embeddings + L × (2 LN + qkv + proj + fc + fc-proj) + final LN + head. */
export function gptParamCount(c: GptConfig): number {
  const C = c.dModel, F = c.dFF, V = c.vocabSize, L = c.nLayer;
  const emb = V * C + (c.positions === 'learned' ? c.seqLen * C : 0);
  const block = 2 * (2 * C) + (3 * C * C + 3 * C) + (C * C + C) + (F * C + F) + (C * F + C);
  const head = c.tieEmbeddings ? 0 : V * C;
  return emb + L * block + 2 * C + head + moeDelta(c, 'total');
}

/** Parameters one token uses: the total minus the experts it is not routed to. */
export function gptActiveParamCount(c: GptConfig): number {
  return gptParamCount(c) - moeDelta(c, 'total') + moeDelta(c, 'active');
}

/** What MoE blocks change against the dense block count (their MLP replaced by router + experts). */
function moeDelta(c: GptConfig, which: 'total' | 'active'): number {
  const C = c.dModel, F = c.dFF;
  let d = 0;
  for (let i = 0; i < c.nLayer; i++) if (isMoeBlock(c.moe, i)) d += moeLayerParams(c.moe!, C, F)[which] - (F * C + F + C * F + C);
  return d;
}

/**
 * Forward FLOPs per token (matmuls only, 2 per multiply-add), PaLM-style: 2·N_matmul
 * plus attention scores and values 2·2·T·C per layer (causal halves are not subtracted).
 */
export function gptFlopsPerToken(c: GptConfig, seqLen = c.seqLen): number {
  const C = c.dModel, F = c.dFF, L = c.nLayer, V = c.vocabSize;
  const matmulParams = L * (3 * C * C + C * C + 2 * C * F) + V * C;
  let moe = 0;
  for (let i = 0; i < L; i++) if (isMoeBlock(c.moe, i)) moe += moeLayerFlops(c.moe!, C, F) - 2 * 2 * C * F;
  return 2 * matmulParams + L * 4 * seqLen * C + moe;
}
