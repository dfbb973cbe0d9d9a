// The benchmark report cannot pass off a disturbed run: a benchmark whose load samples
// exceeded the threshold is marked LOADED in the heading and in its own paragraph, and
// the machine line carries the ISA flags. sampleBusyCpus reads a plausible CPU count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpus } from 'node:os';
import { reportMd, type BenchRecord } from '../bench/report.js';
import { machineInfo, sampleBusyCpus } from '../bench/machine-info.js';
import { projectRoot } from '../src/backend/native.js';

test('benchmark report marks loaded runs and records ISA and load', async () => {
  const busy = await sampleBusyCpus(200);
  assert.ok(busy === null || (busy >= 0 && busy <= cpus().length + 0.01), `busy CPUs ${busy}`);
  const machine = { ...(await machineInfo(projectRoot())), torch: null, torchUnavailable: 'not probed' };
  assert.ok(Array.isArray(machine.isa));
  const rec = (name: string, busyAfter: number, loaded: boolean): BenchRecord => ({
    name, title: name, status: 'ok', seconds: 1, loadBefore: [0.1, 0.1, 0.1], loadAfter: [0.2, 0.2, 0.2], busyBefore: 0.1, busyAfter, loaded, tables: [],
  });
  const base = { stamp: 's', quick: false, argv: [], machine, loadBefore: [0.1, 0.1, 0.1], loadAfter: [0.2, 0.2, 0.2], load: { maxBusyCpus: 0.5, allowed: true } };
  const quiet = reportMd({ ...base, benches: [rec('gemm', 0.1, false)] });
  assert.doesNotMatch(quiet, /LOADED/);
  assert.match(quiet, /threshold 0\.5 CPUs; never exceeded/);
  assert.match(quiet, /other processes busy 0\.10 CPUs before, 0\.10 after/);
  const loaded = reportMd({ ...base, benches: [rec('gemm', 0.1, false), rec('gpt-train', 1.7, true)] });
  assert.match(loaded.split('\n')[0]!, /LOADED: other processes were busy; not for headline figures/);
  assert.match(loaded, /exceeded for gpt-train \(run with --allow-load\)/);
  assert.match(loaded, /### gpt-train[^]*\*\*LOADED: disturbed by other processes\.\*\*/);
  if (machine.isa.length) assert.match(loaded, new RegExp(`\\[${machine.isa.join(' ')}\\]`));
});
