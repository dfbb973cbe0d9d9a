// GPT model configuration and its closed-form parameter count (the oracle for the
// meta-device count in tests and for `athanor train --dry-run`).

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
}

/** Closed form: embeddings + L × (2 LN + qkv + proj + fc + fc-proj) + final LN + head. */
export function gptParamCount(c: GptConfig): number {
  const C = c.dModel, F = c.dFF, V = c.vocabSize, L = c.nLayer;
  const emb = V * C + (c.positions === 'learned' ? c.seqLen * C : 0);
  const block = 2 * (2 * C) + (3 * C * C + 3 * C) + (C * C + C) + (F * C + F) + (C * F + C);
  const head = c.tieEmbeddings ? 0 : V * C;
  return emb + L * block + 2 * C + head;
}

/**
 * Forward FLOPs per token (matmuls only, 2 per multiply-add), PaLM-style: 2·N_matmul
 * plus attention scores and values 2·2·T·C per layer (causal halves are not subtracted).
 */
export function gptFlopsPerToken(c: GptConfig, seqLen = c.seqLen): number {
  const C = c.dModel, F = c.dFF, L = c.nLayer, V = c.vocabSize;
  const matmulParams = L * (3 * C * C + C * C + 2 * C * F) + V * C;
  return 2 * matmulParams + L * 4 * seqLen * C;
}
