// Gradient rules for the tensor-parallel collectives (src/ops/group.ts): each op's
// backward is its conjugate collective (copy ⇄ all-reduce, gather ⇄ reduce-scatter).
import type { GradRuleTable } from '../node.js';
import {
  groupCopyBackward, groupReduceBackward, groupGatherBackward, groupScatterBackward, vocabParallelCrossEntropyBackward,
} from '../../ops/group.js';
import { gatherLinearBackward } from '../../ops/gather-linear.js';

export const groupRules: Pick<GradRuleTable, 'groupCopy' | 'groupReduce' | 'groupGather' | 'groupScatter' | 'vocabParallelCrossEntropy' | 'gatherLinear'> = {
  groupCopy: (node, g) => groupCopyBackward(node, g),
  groupReduce: (node, g) => groupReduceBackward(node, g),
  groupGather: (node, g) => groupGatherBackward(node, g),
  groupScatter: (node, g) => groupScatterBackward(node, g),
  vocabParallelCrossEntropy: (node, g) => vocabParallelCrossEntropyBackward(node, g),
  gatherLinear: (node, g) => gatherLinearBackward(node, g),
};
