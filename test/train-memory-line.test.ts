// The progress line and metrics.jsonl carry measured memory (issue 8, honest accounting):
// the process's array-buffer bytes, their peak, the tensor pool's idle share and RSS,
// beside the planner's per-rank prediction (what `train --dry-run` prints) on logged steps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tinyData, tinyArgs, runCli, CLI } from './helpers/train-fixture.js';
import { spawnSync } from 'node:child_process';

test('progress line and metrics.jsonl show measured memory beside the plan on logged steps', async () => {
  const data = await tinyData();
  const out = mkdtempSync(join(tmpdir(), 'athanor-memline-'));
  const args = [...tinyArgs(data, out), '--train.steps=4', '--train.logEvery=2', '--train.checkpointEvery=0', '--train.evalEvery=0'];
  const r = await runCli(['train', ...args], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, r.out.slice(-3000));
  const lines = r.out.split('\n').filter((l) => /^step \d+\/4 loss/.test(l));
  assert.equal(lines.length, 2, r.out);
  for (const l of lines) assert.match(l, /\| mem \d+ MiB \(peak \d+, pool idle \d+, RSS \d+; plan \d+\)/);
  const recs = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const steps = recs.filter((x) => x.kind === 'step');
  assert.deepEqual(steps.map((s) => s.mem !== undefined), [false, true, false, true], 'sampled on logged steps only');
  const dry = spawnSync(process.execPath, [CLI, 'train', ...args, '--dry-run'], { encoding: 'utf8' });
  assert.equal(dry.status, 0, dry.stderr);
  const total = /→ total ([\d.]+) (KiB|MiB)/.exec(dry.stdout);
  assert.ok(total, dry.stdout);
  const dryMB = Number(total[1]) / (total[2] === 'KiB' ? 1024 : 1);
  for (const s of steps.filter((x) => x.mem)) {
    const m = s.mem;
    assert.ok(m.arrayBuffersMB > 0 && m.arrayBuffersMB <= m.peakArrayBuffersMB + 1e-9, JSON.stringify(m));
    assert.ok(m.poolIdleMB >= 0 && m.poolIdleMB <= m.arrayBuffersMB, JSON.stringify(m));
    assert.ok(m.rssMB > m.arrayBuffersMB, JSON.stringify(m));
    // The figure beside the measurement is the dry run's (same config, same planner).
    assert.ok(Math.abs(m.planMB - dryMB) <= 0.01 * dryMB + 0.01, `plan ${m.planMB} MiB vs --dry-run ${dryMB} MiB`);
  }
  const summary = recs.find((x) => x.kind === 'summary');
  assert.ok(summary.peakArrayBuffersMB >= steps[3].mem.arrayBuffersMB && summary.planMB === steps[3].mem.planMB, JSON.stringify(summary));
});
