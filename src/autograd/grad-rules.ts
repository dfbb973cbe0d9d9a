// The one gradient-rule table. Rules live beside their op families (rules/*.ts);
// this file joins them and is the only place backward looks rules up. The table is
// built on first use because the rule modules import the ops, which import the tape.
import type { GradRule, GradRuleTable, OpName } from './node.js';
import { basicRules } from './rules/basic.js';
import { nnRules } from './rules/nn.js';
import { moeRules } from './rules/moe.js';
import { checkpointGrad } from './checkpoint.js';
import { groupRules } from './rules/group.js';
import { recsysRules } from './rules/recsys.js';

let table: GradRuleTable | undefined;

export function gradRuleTable(): GradRuleTable {
  if (!table) {
    const t: GradRuleTable = { ...basicRules, ...nnRules, ...moeRules, ...groupRules, ...recsysRules, checkpoint: checkpointGrad };
    table = t;
  }
  return table;
}

export function gradRuleFor<K extends OpName>(op: K): GradRule<K> {
  const r = gradRuleTable()[op];
  if (!r) throw new Error(`backward: no gradient rule for op '${op}'`);
  return r;
}
