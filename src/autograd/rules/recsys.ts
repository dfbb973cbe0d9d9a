// Gradient rule of the recommender ops (src/ops/dot-interaction.ts).
import type { GradRuleTable } from '../node.js';
import { dotInteractionBackward } from '../../ops/dot-interaction.js';

export const recsysRules: Pick<GradRuleTable, 'dotInteraction'> = {
  dotInteraction: (node, g) => dotInteractionBackward(node, g),
};
