// `athanor recsys <config>` end to end: generated data, 2 embedding servers, 2 trainer
// processes through the dist launcher; a second run resumes from the first one's checkpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recsysMain } from '../src/recsys/recsys-main.js';
import { parseRecsysConfig, RECSYS_HELP } from '../src/recsys/recsys-config.js';
import { checkpointSteps } from '../src/recsys/hybrid-checkpoint.js';
import type { RecsysResult } from '../src/recsys/recsys-worker.js';

test('recsys main: trains with 2 trainer processes, evaluates, and a rerun resumes from the checkpoint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'recsys-main-'));
  try {
    const cfg = (maxSteps: number) => ({
      workDir: 'run',
      data: { numDense: 4, numSparse: 6, generate: { trainRows: 12000, testRows: 2000, vocab: 100 } },
      servers: { numShards: 2, optimizer: { kind: 'adagrad', lr: 0.05 }, init: { kind: 'uniform', scale: 0.3 } },
      model: { embDim: 8, bottom: [16], top: [16] },
      train: { trainers: 2, batchSize: 128, staleness: 2, maxSteps, checkpointEvery: 10, dense: { kind: 'adamw', lr: 0.003 }, logEvery: 10 },
    });
    const path = join(dir, 'cfg.json');
    writeFileSync(path, JSON.stringify(cfg(20)));
    assert.equal(await recsysMain([path]), 0);
    const r1 = JSON.parse(readFileSync(join(dir, 'run', 'result.json'), 'utf8')) as RecsysResult;
    assert.equal(r1.steps, 20);
    assert.equal(r1.trainers, 2);
    assert.ok(r1.auc > 0.6, `AUC ${r1.auc}`);
    assert.ok(r1.samplesPerSec > 0 && r1.evalSamples === 2000);
    assert.deepEqual(checkpointSteps(join(dir, 'run', 'checkpoints')), [10, 20]);
    writeFileSync(path, JSON.stringify(cfg(30)));
    assert.equal(await recsysMain([path]), 0);
    const r2 = JSON.parse(readFileSync(join(dir, 'run', 'result.json'), 'utf8')) as RecsysResult;
    assert.equal(r2.steps, 30);
    assert.equal(r2.trainSamples, 10 * 2 * 128, 'only the 10 new steps were trained');
    assert.deepEqual(checkpointSteps(join(dir, 'run', 'checkpoints')), [20, 30]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recsys config: errors name the field; --help documents every field', () => {
  assert.throws(() => parseRecsysConfig({ train: { batchSize: 0 } }, 'x.json'), /x\.json: train: field 'batchSize' must be an integer >= 1/);
  assert.throws(() => parseRecsysConfig({ bogus: 1 }, 'x.json'), /unknown field 'bogus'/);
  assert.throws(() => parseRecsysConfig({ train: { sharedMemoryBytes: -1 } }, 'x.json'), /x\.json: train: field 'sharedMemoryBytes' must be an integer >= 0/);
  assert.equal(parseRecsysConfig({ train: { sharedMemoryBytes: 0 } }, 'x.json').train.sharedMemoryBytes, 0);
  assert.throws(() => parseRecsysConfig({ servers: { optimizer: { kind: 'adam', lr: 0.01 } }, train: { stalenessCorrection: true } }, 'x.json'), /x\.json: train: field 'stalenessCorrection' needs servers\.optimizer\.kind/);
  assert.throws(() => parseRecsysConfig({ train: { stalenessCorrection: 1 } }, 'x.json'), /field 'stalenessCorrection' must be true or false/);
  assert.equal(parseRecsysConfig({}, 'x.json').train.stalenessCorrection, true);
  assert.equal(parseRecsysConfig({ servers: { optimizer: { kind: 'adam', lr: 0.01 } } }, 'x.json').train.stalenessCorrection, false);
  const c = parseRecsysConfig({}, '/tmp/x.json');
  const fields = (o: object, prefix: string): string[] => Object.entries(o).flatMap(([k, v]) =>
    v && typeof v === 'object' && !Array.isArray(v) && !['optimizer', 'init', 'dense'].includes(k) ? fields(v, `${prefix}${k}.`) : [`${prefix}${k}`]);
  for (const f of fields(c, '')) {
    const last = f.split('.').pop()!;
    assert.ok(RECSYS_HELP.includes(f) || RECSYS_HELP.includes(`.${last}`), `--help does not document '${f}'`);
  }
});
