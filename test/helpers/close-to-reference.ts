// Element-wise comparison of a native kernel's output with its TypeScript reference,
// naming the first element outside atol + rtol·|reference|.
import assert from 'node:assert/strict';

export function closeToReference(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 2e-5, atol = 2e-6): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) assert.fail(`${what}: element ${i}: native ${a} vs reference ${e}`);
  }
}
