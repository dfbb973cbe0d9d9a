// How tensor parallelism splits each GPT parameter (Megatron-LM's layout, which the
// core3d branch's src/parallel/plans/gpt.ts implements for Athanor): column-parallel
// GEMMs split their output features, row-parallel ones their input features (their
// bias is added once, after the all-reduce), embeddings and the head split the vocabulary.
// Keyed by the traced parameter names; a name no rule knows is replicated (the
// conservative choice for memory).
export type TpRule = 'col' | 'row' | 'row-bias' | 'vocab' | 'replicated';

const RULES: [RegExp, TpRule][] = [
  [/\.(attn\.c_attn|mlp\.c_fc)\.(weight|bias)$/, 'col'],
  [/\.(attn|mlp)\.c_proj\.weight$/, 'row'],
  [/\.(attn|mlp)\.c_proj\.bias$/, 'row-bias'],
  [/^(wte|lm_head)\.weight$/, 'vocab'],
];

export function tpRule(name: string): TpRule {
  for (const [re, r] of RULES) if (re.test(name)) return r;
  return 'replicated';
}
