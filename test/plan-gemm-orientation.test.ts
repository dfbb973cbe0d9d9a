// The planner prices a linear layer's weight gradient at the shape and orientation the
// backward runs it (ops/matmul.ts: dW = Gᵀ·X, a TN GEMM of M = the forward's n, N = its k,
// K = its m), not with M and N swapped: with a TN table whose rate depends on orientation,
// the estimate's backward GEMM time must equal the sum over the traced GEMMs priced that way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { presetConfig } from '../src/train/config.js';
import { traceGpt } from '../src/plan/models.js';
import { estimate } from '../src/plan/estimate.js';
import { parseLayout } from '../src/plan/layout.js';
import { loadCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { interpShape, type GemmPoint } from '../src/plan/compute-rates.js';
import { projectRoot } from '../src/backend/native.js';
import { join } from 'node:path';

test('backward GEMM: dA priced as NN (m, k, n), dW as TN (n, k, m)', () => {
  const base = loadCluster(join(projectRoot(), 'clusters', 'this-machine.json'));
  const R = 50e9;
  // Wide-output TN (M = 2048, N = 128) at 20 GFLOP/s, the transposed shape at 200: a swap shows as a 10× rate.
  const tn: GemmPoint[] = [[2048, 128, 2048, 20e9], [128, 2048, 2048, 200e9], [512, 512, 2048, 80e9]];
  const c: ClusterSpec = { ...base, device: { ...base.device, overhead: undefined, opOverhead: { value: 0, source: 'assumption: test, no per-op cost' }, gemmTable: { source: 'assumption: test table', points: [[512, 512, 512, R]], nn: [[512, 512, 512, R]], tn } } };
  const cfg = { ...presetConfig('gpt-tiny').model, nLayer: 1 };
  const tr = traceGpt(cfg, { microBatch: 16 });
  const e = estimate(tr, parseLayout('dp=1,mb=16'), c, { seqLen: cfg.seqLen, dModel: cfg.dModel });
  let want = 0, swapped = 0;
  for (const op of tr.ops) {
    if (op.phase !== 'backward' || op.cls !== 'gemm' || !op.dims) continue;
    const [m, n, k] = op.dims as [number, number, number];
    want += op.flops / 2 / R + op.flops / 2 / interpShape(tn, n, k, m);
    swapped += op.flops / 2 / R + op.flops / 2 / interpShape(tn, k, n, m);
  }
  assert.ok(want > 0 && Math.abs(want - swapped) / want > 0.05, 'the test table must tell the orientations apart');
  const got = e.time.compute['backward:gemm']!;
  assert.ok(Math.abs(got - want) / want < 1e-9, `backward:gemm ${got} s, want ${want} s (swapped M/N would give ${swapped} s)`);
});
