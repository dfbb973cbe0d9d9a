// CI cannot pass with a broken native build: under ATHANOR_REQUIRE_NATIVE=1 a missing
// kernel library fails the program (and a failed compile fails the install), while
// without it the same program falls back to the TypeScript kernels with a notice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';

const opsUrl = new URL('../src/ops/index.js', import.meta.url).href;
const code = `
  const op = await import(${JSON.stringify(opsUrl)});
  const x = op.randn([256, 256]);
  console.log('sum', op.sum(op.gelu(x)).item());
`;

function child(env: Record<string, string>): { status: number | null; out: string } {
  const base = { ...process.env };
  delete base.ATHANOR_REQUIRE_NATIVE;
  delete base.ATHANOR_BACKEND;
  delete base.ATHANOR_QUIET; // the fallback notice is part of what is checked
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { env: { ...base, ATHANOR_NATIVE_MIN: '0', ...env }, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('ATHANOR_REQUIRE_NATIVE=1 turns a missing kernel library into an error; without it the fallback runs', () => {
  const missing = join(mkdtempSync(join(tmpdir(), 'athanor-nolib-')), 'libathanor.so');
  const fallback = child({ ATHANOR_NATIVE_LIB: missing });
  assert.equal(fallback.status, 0, fallback.out);
  assert.match(fallback.out, /native kernel library not found at .*libathanor\.so/);
  assert.match(fallback.out, /^sum -?\d/m);
  const strict = child({ ATHANOR_NATIVE_LIB: missing, ATHANOR_REQUIRE_NATIVE: '1' });
  assert.notEqual(strict.status, 0, strict.out);
  assert.match(strict.out, /ATHANOR_REQUIRE_NATIVE=1: native kernel library not found/);
  assert.doesNotMatch(strict.out, /^sum /m);
  // ATHANOR_BACKEND=reference is the deliberate no-native mode and stays allowed.
  const ref = child({ ATHANOR_NATIVE_LIB: missing, ATHANOR_REQUIRE_NATIVE: '1', ATHANOR_BACKEND: 'reference' });
  assert.equal(ref.status, 0, ref.out);
});

test('ATHANOR_REQUIRE_NATIVE=1 makes a failed kernel compile fail the install', () => {
  const script = join(projectRoot(), 'scripts', 'build-native.mjs');
  // `false` as the compiler: every attempt fails and nothing is written.
  const lax = spawnSync(process.execPath, [script], { env: { ...process.env, CC: 'false', ATHANOR_REQUIRE_NATIVE: '' }, encoding: 'utf8' });
  assert.equal(lax.status, 0, lax.stderr);
  assert.match(lax.stderr, /could not compile native kernels/);
  const strict = spawnSync(process.execPath, [script], { env: { ...process.env, CC: 'false', ATHANOR_REQUIRE_NATIVE: '1' }, encoding: 'utf8' });
  assert.equal(strict.status, 1, strict.stderr);
});
