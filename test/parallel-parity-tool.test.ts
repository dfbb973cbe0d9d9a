// The per-layer parity tool (tools/tp-parity.ts) through the launcher: a correct layout
// passes every layer; a collective removed on purpose is named as the first divergence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli } from './helpers/train-fixture.js';
import { projectRoot } from '../src/backend/native.js';

const TOOL = join(projectRoot(), 'dist', 'tools', 'tp-parity.js');
const SMALL = ['--model.nLayer=2', '--model.seqLen=32', '--model.vocabSize=512'];

async function parity(extra: string[]): Promise<{ code: number | null; out: string }> {
  return runCli(['launch', '--nproc-per-node', '2', '--', 'node', TOOL, ...SMALL, ...extra]);
}

test('tp-parity: tp=2 and tp=2 + sp match the single-process model at every layer', async () => {
  for (const extra of [[], ['--sp']]) {
    const r = await parity(extra);
    assert.equal(r.code, 0, r.out.slice(-3000));
    assert.match(r.out, /no layer diverges/);
    assert.match(r.out, /h\.1\.mlp\s+\d\.\d+e[-+]\d+\s+\d\.\d+e[-+]\d+/, 'a row per layer');
  }
});

test('tp-parity names the layer whose collective was broken on purpose', async () => {
  for (const [extra, layer] of [[['--break', 'h.1.mlp'], 'h.1.mlp'], [['--sp', '--break', 'h.0.attn'], 'h.0.attn']] as [string[], string][]) {
    const r = await parity(extra);
    assert.notEqual(r.code, 0, `${extra.join(' ')}: the tool should fail`);
    assert.match(r.out, new RegExp(`first diverging layer: ${layer.replace('.', '\\.')} \\(activation\\)`), r.out.slice(-3000));
  }
});
