// Gradient rules of the mixture-of-experts ops (src/ops/moe.ts): each backward sits next
// to its forward and accumulates into the input gradients.
import type { GradRuleTable } from '../node.js';
import { allToAllVBackward, groupedMatmulBackward, moeCombineBackward, moeDispatchBackward } from '../../ops/moe.js';

export const moeRules: Pick<GradRuleTable, 'moeDispatch' | 'moeCombine' | 'groupedMatmul' | 'allToAllV'> = {
  moeDispatch: (node, g) => moeDispatchBackward(node, g),
  moeCombine: (node, g) => moeCombineBackward(node, g),
  groupedMatmul: (node, g) => groupedMatmulBackward(node, g),
  allToAllV: (node, g) => allToAllVBackward(node, g),
};
