// Walks the gradient-rule table: every rule must have at least one case, and every
// case must pass a central finite-difference check in float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gradRuleTable } from '../src/autograd/grad-rules.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { Tensor, fromStorage, forEachIndex } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { Rng } from '../src/core/rng.js';
import type { GradCase } from './gradcheck-cases/types.js';
import { basicCases } from './gradcheck-cases/basic.js';
import { nnCases } from './gradcheck-cases/nn.js';
import { autogradCases } from './gradcheck-cases/autograd.js';
import { moeCases } from './gradcheck-cases/moe.js';
import { groupCases } from './gradcheck-cases/group.js';
import { recsysCases } from './gradcheck-cases/recsys.js';

const cases: GradCase[] = [...basicCases, ...nnCases, ...autogradCases, ...groupCases, ...moeCases, ...recsysCases];

test('every gradient rule has a finite-difference check', () => {
  const covered = new Set(cases.map((c) => c.op));
  const missing = Object.keys(gradRuleTable()).filter((op) => !covered.has(op as GradCase['op']));
  assert.deepEqual(missing, [], `rules without a gradient check: ${missing.join(', ')}`);
});

function readAll(t: Tensor): Float64Array {
  const out = new Float64Array(t.size);
  const d = t.data;
  forEachIndex(t.shape, t.strides, t.offset, (s, i) => { out[i] = d[s]!; });
  return out;
}

for (const c of cases) {
  test(`gradcheck ${c.op}: ${c.name}`, () => {
    scope(() => {
      const inputs = c.inputs();
      const rng = new Rng(1234);
      const probe = () => noGrad(() => readAll(c.fn(inputs)));
      const y0 = probe();
      const r = new Float64Array(y0.length);
      rng.fillNormal(r);
      // Analytic: backward with a random cotangent r gives J^T r.
      const y = c.fn(inputs);
      backward(y, { grad: fromStorage(Float64Array.from(r), y.shape, 'float64') });
      const eps = c.eps ?? 1e-6;
      const tol = c.tol ?? 1e-5;
      for (const [k, x] of inputs.entries()) {
        if (!x.requiresGrad) continue;
        assert.ok(x.grad, `${c.op}/${c.name}: input ${k} got no gradient`);
        const analytic = readAll(x.grad);
        const d = x.data as Float64Array;
        let worst = 0;
        let idx = 0;
        forEachIndex(x.shape, x.strides, x.offset, (s, i) => {
          const old = d[s]!;
          d[s] = old + eps;
          const yp = probe();
          d[s] = old - eps;
          const ym = probe();
          d[s] = old;
          let num = 0;
          for (let j = 0; j < r.length; j++) num += r[j]! * (yp[j]! - ym[j]!);
          num /= 2 * eps;
          const err = Math.abs(num - analytic[i]!) / Math.max(1, Math.abs(num));
          if (err > worst) { worst = err; idx = i; }
        });
        assert.ok(worst <= tol, `${c.op}/${c.name}: input ${k} element ${idx}: relative error ${worst.toExponential(2)} > ${tol}`);
      }
    });
  });
}
