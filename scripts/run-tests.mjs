// Runs every compiled test file under dist/test with node's test runner.
// Files run two at a time (this is a 2-core machine); multi-process tests spawn
// their own ranks. Extra arguments filter files by substring.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = join(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..');
const testDir = join(root, 'dist', 'test');
const filters = process.argv.slice(2);

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

const files = walk(testDir)
  .map((f) => relative(root, f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error(`no test files matched under ${testDir}`);
  process.exit(1);
}
const concurrency = process.env.ATHANOR_TEST_CONCURRENCY ?? '2';
// Every test (and every process it spawns) makes its scratch directories under one
// TMPDIR that is removed afterwards, so a failed or killed test cannot fill the disk
// with checkpoints and datasets over repeated runs.
const scratch = mkdtempSync(join(tmpdir(), 'athanor-tests-'));
const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, TMPDIR: scratch, ATHANOR_QUIET: process.env.ATHANOR_QUIET ?? '1' },
});
rmSync(scratch, { recursive: true, force: true });
process.exit(r.status ?? 1);
