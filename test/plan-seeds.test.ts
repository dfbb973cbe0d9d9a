// The seed-systems table: docs/plan-seeds.md is the script's output (never hand-typed), and
// a row more than 2× off its published figure must say why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { seedRows, seedTable } from '../bench/plan-seeds.js';
import { projectRoot } from '../src/backend/native.js';

test('docs/plan-seeds.md holds the table bench/plan-seeds.ts generates', () => {
  const rows = seedRows();
  for (const s of ['Fugaku-LLM 13B', 'BaGuaLu 14.5T MoE', 'BaGuaLu 174T MoE', 'Yuan 4.7B (ASC22 task)', 'PERSIA 100T']) assert.ok(rows.some((r) => r.system === s), s);
  // BaGuaLu is traced (MoE meta branch): its parameter count matches the published total within 1%.
  for (const r of rows.filter((x) => x.system.startsWith('BaGuaLu') && x.quantity.startsWith('memory'))) {
    const m = /traced ([\d.]+)T parameters/.exec(r.predicted);
    const pub = Number(/BaGuaLu ([\d.]+)T/.exec(r.system)![1]);
    assert.ok(m && Math.abs(Number(m[1]) / pub - 1) < 0.01, r.predicted);
  }
  const doc = readFileSync(join(projectRoot(), 'docs', 'plan-seeds.md'), 'utf8');
  assert.ok(doc.includes(seedTable(rows)), 'docs/plan-seeds.md is stale: run node dist/bench/plan-seeds.js --doc docs/plan-seeds.md');
});

test('a seed row more than 2× off without a reason is refused', () => {
  const row = { system: 'X', quantity: 'q', published: '1', predicted: '3', ratio: 3, note: '' };
  assert.throws(() => seedTable([row]), /X \(q\) is 3× the published figure and gives no reason/);
  assert.match(seedTable([{ ...row, why: 'because' }]), /\*\*X, q\*\*: because/);
});
