// The CLI rejects bad input with messages that name the file, field or option.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, symlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { runCli, tmp, tinyData, CLI } from './helpers/train-fixture.js';

async function fails(args: string[], re: RegExp): Promise<void> {
  const r = await runCli(args);
  assert.notEqual(r.code, 0, `expected failure for ${args.join(' ')}`);
  assert.match(r.out, re);
}

test('bad config key names the key and suggests the right one', () => fails(['train', '--model.nLayr=6'], /unknown config key 'model\.nLayr' \(did you mean --model\.nLayer\?\)/));
test('bad value type names the option', () => fails(['train', '--train.steps=many'], /--train\.steps expects a number, got 'many'/));
test('invalid invariant is reported at start', () => fails(['train', '--model.nHead=3'], /model\.dModel \(128\) must be divisible by model\.nHead \(3\)/));
test('missing corpus is named', () => fails(['prepare', '/nonexistent/corpus.txt', '--out', tmp('p')], /input '\/nonexistent\/corpus\.txt' does not exist/));
test('missing prepared data is named', () => fails(['train', '--data.dir=/nonexistent/data'], /data\.dir '\/nonexistent\/data' does not exist/));
test('unknown preset is named', () => fails(['train', '--preset', 'gpt-huge'], /unknown preset 'gpt-huge'/));
test('unreadable shard names the file', async () => {
  const data = await tinyData();
  const dir = tmp('badshard');
  for (const f of ['train.bin', 'val.bin', 'val.idx']) writeFileSync(join(dir, f), Buffer.alloc(0));
  writeFileSync(join(dir, 'train.idx'), Buffer.from('not an index file at all, really'));
  void data;
  await fails(['train', `--data.dir=${dir}`], /train\.idx/);
});
test('generate without a checkpoint says where it looked', () => fails(['generate', '--run', tmp('nockpt')], /no checkpoint found/));
test('dry run reports parameters and memory without allocating', async () => {
  const r = await runCli(['train', '--preset', 'fugaku-13b', '--dry-run']);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /fugaku-13b: [\d,]+ parameters \(closed form [\d,]+, equal\)/);
  assert.match(r.out, /memory per rank: weights/);
});

test('the CLI runs through a symlinked bin (as npm links `athanor`)', async () => {
  const dir = tmp('bin');
  const link = join(dir, 'athanor');
  symlinkSync(CLI, link);
  const r = spawnSync(process.execPath, [link, '--help'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /usage: athanor <command>/);
});
