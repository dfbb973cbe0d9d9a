// Shared by the golden tests (fp32 and bf16 against PyTorch): reading a committed
// safetensors golden file and the error measure both report.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readSafetensors } from '../../src/io/safetensors.js';
import { projectRoot } from '../../src/backend/native.js';
import type { Tensor } from '../../src/core/tensor.js';

/** A golden file under test/golden/ and a getter that names a missing tensor. */
export function goldenFile(name: string): (key: string) => Tensor {
  const golden = readSafetensors(join(projectRoot(), 'test', 'golden', name));
  return (k: string): Tensor => {
    const t = golden.tensors.get(k);
    assert.ok(t, `golden file ${name} lacks '${k}'`);
    return t;
  };
}

/** max |a − b| / max |b|: the error scaled by the reference tensor's largest magnitude. */
export function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / Math.max(den, 1e-12);
}
