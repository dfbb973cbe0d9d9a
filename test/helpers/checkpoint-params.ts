// Compares the final parameters of two runs from their latest checkpoints (optimizer state
// left out), shared by the pipeline and MoE × mesh equivalence tests.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CheckpointReader, latestCheckpoint } from '../../src/io/checkpoint.js';

export interface CloseParamsOptions {
  /** 'relative': |a − b| ≤ tol × the tensor's largest |b|; 'absolute': |a − b| ≤ tol. */
  bound: 'relative' | 'absolute';
  /** Extra checks on the parameter names (e.g. that MoE parameters are there). */
  names?: (names: string[]) => void;
  /** Also assert equal shapes per tensor. */
  shapes?: boolean;
}

/**
 * Every parameter of run A's latest checkpoint within `tol` of run B's, except the attention
 * key bias (rows [C, 2C) of c_attn.bias): its exact gradient is zero, so a different float32
 * summation order moves it by O(lr) through Adam; it is held to tol at the model's scale
 * (the largest parameter of the model) instead.
 */
export function closeCheckpointParams(outA: string, outB: string, what: string, tol: number, o: CloseParamsOptions): void {
  const ra = new CheckpointReader(latestCheckpoint(join(outA, 'checkpoints'))!);
  const rb = new CheckpointReader(latestCheckpoint(join(outB, 'checkpoints'))!);
  try {
    const names = rb.names().filter((n) => !n.startsWith('optim.'));
    assert.deepEqual(ra.names().filter((n) => !n.startsWith('optim.')).sort(), [...names].sort(), `${what}: parameter names`);
    o.names?.(names);
    const read = (r: CheckpointReader, n: string) => r.readRange(n, 0, r.entry(n).shape.reduce((x, y) => x * y, 1)) as Float32Array;
    let modelMag = 0;
    for (const n of names) for (const v of read(rb, n)) modelMag = Math.max(modelMag, Math.abs(v));
    for (const n of names) {
      if (o.shapes) assert.deepEqual(ra.entry(n).shape, rb.entry(n).shape, `${what}: ${n} shape`);
      const a = read(ra, n), b = read(rb, n);
      const C = n.endsWith('c_attn.bias') ? b.length / 3 : 0;
      let err = 0, mag = 0, keyErr = 0;
      for (let i = 0; i < b.length; i++) {
        const d = Math.abs(a[i]! - b[i]!);
        if (C && i >= C && i < 2 * C) keyErr = Math.max(keyErr, d);
        else { err = Math.max(err, d); mag = Math.max(mag, Math.abs(b[i]!)); }
      }
      assert.ok(err <= (o.bound === 'relative' ? tol * mag : tol), `${what}: parameter ${n} differs by ${err} (max |p| ${mag})`);
      assert.ok(keyErr <= tol * modelMag, `${what}: key bias of ${n} differs by ${keyErr} (model scale ${modelMag})`);
    }
  } finally {
    ra.close(); rb.close();
  }
}
