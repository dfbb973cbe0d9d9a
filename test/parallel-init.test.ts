// Layout-independent initialization: every parameter has its own stream (seed, name),
// so a shard materialized alone equals the same elements of the single-process model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GPT } from '../src/nn/gpt.js';
import { materialize } from '../src/nn/materialize.js';
import { globalRuns, localShape, mapRange, type Shard } from '../src/parallel/placement.js';

const cfg = { nLayer: 2, nHead: 4, dModel: 16, dFF: 64, vocabSize: 40, seqLen: 8, tieEmbeddings: false, positions: 'learned' as const, dropout: 0, lnEps: 1e-5 };

function gather(full: Float32Array, s: Shard): Float32Array {
  const out = new Float32Array(localShape(s).reduce((a, b) => a * b, 1));
  let o = 0;
  for (const r of globalRuns(s)) { out.set(full.subarray(r.start, r.start + r.length), o); o += r.length; }
  return out;
}

test('a parameter does not depend on construction order: same seed, same values; other seed, other values', () => {
  const a = new GPT(cfg, { seed: 3 }), b = new GPT({ ...cfg, nLayer: 3 }, { seed: 3 }), c = new GPT(cfg, { seed: 4 });
  const pa = new Map(a.namedParameters()), pb = new Map(b.namedParameters()), pc = new Map(c.namedParameters());
  // A third layer (built before ln_f and lm_head) changes nothing for the others (the
  // c_proj weights' std depends on nLayer, so they compare after rescaling).
  for (const [n, p] of pa) {
    if (n.endsWith('c_proj.weight')) {
      const r = Math.sqrt(3 / 2), x = p.toArray(), y = pb.get(n)!.toArray();
      x.forEach((v, i) => assert.ok(Math.abs(v - y[i]! * r) <= 1e-6 * Math.abs(v) + 1e-9, n));
    } else assert.deepEqual(p.toArray(), pb.get(n)!.toArray(), n);
  }
  assert.notDeepEqual(pa.get('h.0.mlp.c_fc.weight')!.toArray(), pc.get('h.0.mlp.c_fc.weight')!.toArray());
  // c_proj weights keep the GPT-2 scaled std (0.02 / sqrt(2L)).
  const w = pa.get('h.1.attn.c_proj.weight')!.toArray();
  const std = Math.sqrt(w.reduce((s, v) => s + v * v, 0) / w.length);
  assert.ok(std > 0.008 && std < 0.012, `c_proj std ${std} (expected ~0.02/sqrt(2·2) = 0.01)`);
});

test('tensor-parallel shards (by heads in QKV, by columns, by vocabulary) materialize exactly the full model\'s elements', () => {
  const full = new Map(new GPT(cfg, { seed: 11 }).namedParameters());
  for (const size of [2, 4]) {
    for (let rank = 0; rank < size; rank++) {
      const plan = (name: string, shape: readonly number[]): Shard | null => {
        if (name.endsWith('c_attn.weight') || name.endsWith('c_attn.bias')) return { globalShape: shape, dim: 0, blocks: 3, rank, size };
        if (name.endsWith('attn.c_proj.weight') || name.endsWith('mlp.c_proj.weight')) return { globalShape: shape, dim: 1, blocks: 1, rank, size };
        if (name.endsWith('c_fc.weight') || name.endsWith('c_fc.bias') || name === 'wte.weight' || name === 'lm_head.weight') return { globalShape: shape, dim: 0, blocks: 1, rank, size };
        return null;
      };
      const m = new GPT(cfg, { seed: 11, deferInit: true });
      materialize(m, 11, (name, meta) => {
        const s = plan(name, meta.shape);
        return s ? { shape: localShape(s), runs: globalRuns(s) } : null;
      });
      for (const [n, p] of m.namedParameters()) {
        const s = plan(n, full.get(n)!.shape);
        const want = s ? gather(full.get(n)!.data as Float32Array, s) : full.get(n)!.data;
        assert.deepEqual(Array.from(p.data), Array.from(want), `${n} tp ${rank}/${size}`);
      }
    }
  }
});

test('mapRange splits a local range into global pieces', () => {
  const s: Shard = { globalShape: [4, 6], dim: 1, blocks: 1, rank: 1, size: 2 };
  const runs = globalRuns(s);
  assert.deepEqual(runs.map((r) => [r.start, r.length]), [[3, 3], [9, 3], [15, 3], [21, 3]]);
  assert.deepEqual(mapRange(runs, 2, 7), [{ start: 5, length: 1, local: 2 }, { start: 9, length: 3, local: 3 }, { start: 15, length: 1, local: 6 }]);
});
