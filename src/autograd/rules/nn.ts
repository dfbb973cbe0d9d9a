// Gradient rules for neural-network ops. Each rule is the fused backward next to its
// forward in src/ops (matmul.ts, nn.ts, attention.ts) and accumulates into the input
// gradients (GEMM beta = 1, "+=" kernels), llm.c style.
import type { GradRuleTable } from '../node.js';
import { matmulBackward } from '../../ops/matmul.js';
import { attentionBackward } from '../../ops/attention.js';
import {
  crossEntropyBackward, dropoutBackward, embeddingBackward, layerNormBackward, rmsNormBackward, softmaxBackward,
} from '../../ops/nn.js';

export const nnRules: Pick<GradRuleTable,
  'matmul' | 'softmax' | 'logSoftmax' | 'crossEntropy' | 'layerNorm' | 'rmsNorm' | 'embedding' | 'dropout' | 'attention'> = {
  matmul: (node, g) => matmulBackward(node, g),
  softmax: (node, g) => softmaxBackward(node, g),
  logSoftmax: (node, g) => softmaxBackward(node, g),
  crossEntropy: (node, g) => crossEntropyBackward(node, g),
  layerNorm: (node, g) => layerNormBackward(node, g),
  rmsNorm: (node, g) => rmsNormBackward(node, g),
  embedding: (node, g) => embeddingBackward(node, g),
  dropout: (node, g) => dropoutBackward(node, g),
  attention: (node, g) => attentionBackward(node, g),
};
