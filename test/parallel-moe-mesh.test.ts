// MoE composed with pipeline and tensor parallelism (and expert parallelism inside pipeline
// stages) through `athanor launch` (and mpirun): every step's loss (which includes the routers' auxiliary and z losses, from
// whichever stage runs them), the final parameters and the MoE metrics (per-expert load
// of every layer, drop rate, aux/z loss, router entropy) equal single-process training
// with the same micro-batches within 1e-5 relative. Tensor parallelism sums the experts'
// F-split partial outputs in another order than one GEMM does; measured differences are
// ~1e-8 relative in the loss, far inside the bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { CheckpointReader } from '../src/io/checkpoint.js';
import { tinyData, stepLosses, tmp, CLI, runCli } from './helpers/train-fixture.js';
import { projectRoot } from '../src/backend/native.js';
import { runMesh, meshArgs, closeLosses, closeParams, sameMoeMetrics, type MeshRun } from './helpers/moe-mesh.js';

let single: MeshRun | null = null;
let ppep: MeshRun | null = null;
const base = async () => (single ??= await runMesh('moe-single', {}));

test('MoE × pipeline: pp=2 1F1B and pp=2 interleaved (2 chunks) × dp=2 ZeRO-1 equal one process', async () => {
  const ref = await base();
  const pp2 = await runMesh('moe-pp2', { pp: 2 });
  assert.match(pp2.log, /pipeline: 2 stages × 1 chunk\(s\), 1f1b/);
  closeLosses(pp2.losses, ref.losses, 'pp=2 1f1b');
  closeParams(pp2.out, ref.out, 'pp=2 1f1b');
  sameMoeMetrics(pp2.out, ref.out, 'pp=2 1f1b');
  // Interleaved: each rank runs two non-adjacent chunks, so both ranks hold non-last
  // chunks whose aux losses must reach the loss and the routers' gradients.
  const ppdp = await runMesh('moe-pp2dp2', { pp: 2, dp: 2, zero: 1, schedule: 'interleaved', chunks: 2 });
  assert.match(ppdp.log, /pipeline: 2 stages × 2 chunk\(s\), interleaved/);
  closeLosses(ppdp.losses, ref.losses, 'pp=2 interleaved × dp=2');
  closeParams(ppdp.out, ref.out, 'pp=2 interleaved × dp=2');
  sameMoeMetrics(ppdp.out, ref.out, 'pp=2 interleaved × dp=2');
});

test('MoE × pipeline × expert parallel: pp=2 × ep=2 (4 ranks, ZeRO-2; each stage\'s experts split over its 2 data-parallel ranks) equals one process', async () => {
  const ref = await base();
  ppep = await runMesh('moe-pp2ep2', { pp: 2, dp: 2, zero: 2 }, ['--parallel.ep=2']);
  assert.match(ppep.log, /expert parallel: ep=2 × edp=1.*pipeline: 2 stages × 1 chunk\(s\), 1f1b/);
  closeLosses(ppep.losses, ref.losses, 'pp=2 × ep=2');
  closeParams(ppep.out, ref.out, 'pp=2 × ep=2');
  sameMoeMetrics(ppep.out, ref.out, 'pp=2 × ep=2');
});

test('MoE × tensor parallel: tp=2 (experts split over F, router replicated) and tp=2 × pp=2 GPipe equal one process', async () => {
  const ref = await base();
  const tp2 = await runMesh('moe-tp2', { tp: 2 });
  assert.match(tp2.log, /tensor parallel over 2 ranks/);
  closeLosses(tp2.losses, ref.losses, 'tp=2');
  closeParams(tp2.out, ref.out, 'tp=2');
  sameMoeMetrics(tp2.out, ref.out, 'tp=2');
  const tppp = await runMesh('moe-tp2pp2', { tp: 2, pp: 2, schedule: 'gpipe' });
  closeLosses(tppp.losses, ref.losses, 'tp=2 × pp=2 gpipe');
  closeParams(tppp.out, ref.out, 'tp=2 × pp=2 gpipe');
  sameMoeMetrics(tppp.out, ref.out, 'tp=2 × pp=2 gpipe');
});

test('tp-parity with MoE layers: every tp rank\'s replicated router and expert biases get the single-process gradient (no reduction needed), split experts their slice', async () => {
  // Each rank compares the gradient of every parameter it holds (its F-slice of the
  // experts, its full copy of the router, the experts' c_proj biases and the norms) with
  // the single-process model's; the worst over both ranks is printed per layer.
  const tool = join(projectRoot(), 'dist', 'tools', 'tp-parity.js');
  const r = await runCli(['launch', '--nproc-per-node', '2', '--', 'node', tool, '--model.nLayer=2', '--model.seqLen=32', '--model.vocabSize=512',
    '--model.moe.experts=4', '--model.moe.every=1', '--model.moe.capacityFactor=1.25', '--model.moe.zLossCoef=1e-3', '--model.moe.sharedExpert=true', '--tol', '1e-5']);
  assert.equal(r.code, 0, r.out.slice(-3000));
  assert.match(r.out, /h\.1\.moe\s+\d\.\d+e[-+]\d+\s+\d\.\d+e[-+]\d+/, 'a row for the MoE layer');
  assert.match(r.out, /no layer diverges/);
});

test('MoE checkpoints across layouts with bias balancing: pp=2 × ep=2 → pp=2 → tp=2 resumes to the straight run', async () => {
  // Constant LR after warmup so stopping early does not change the straight run's rates;
  // a large bias rate so the routing biases change routing within these steps (a resume
  // that lost a stage's biases would route differently).
  const c = ['--optim.schedule=constant', '--model.moe.balance=bias', '--model.moe.biasRate=2'];
  const straight = await runMesh('moe-bias-straight', {}, c);
  const out = tmp('moe-bias-resume');
  const bias = (dir: string, step: number) => {
    const r = new CheckpointReader(join(dir, 'checkpoints', `step-${String(step).padStart(8, '0')}`));
    try { return (r.state as { moeBias?: number[][] }).moeBias; } finally { r.close(); }
  };
  // Every layer's biases (both stages') are in the pipeline's checkpoints, and non-zero.
  const allMoved = (s: number) => {
    const b = bias(out, s);
    assert.equal(b?.length, 4, `step ${s}: moeBias of all 4 MoE layers`);
    assert.ok(b!.every((l) => l.some((v) => v !== 0)), `step ${s}: every layer's routing biases moved`);
  };
  await runMesh('moe-bias-pp2ep2', { pp: 2, dp: 2, zero: 1 }, [...c, '--parallel.ep=2', '--train.steps=3'], out);
  allMoved(3);
  const resumed = await runMesh('moe-bias-pp2-b', { pp: 2, schedule: 'gpipe' }, [...c, '--train.steps=5', '--resume'], out);
  assert.match(resumed.log, /resumed from .*step-00000003 at step 3/);
  allMoved(5);
  const last = await runMesh('moe-bias-tp2', { tp: 2 }, [...c, '--resume'], out);
  assert.match(last.log, /resumed from .*step-00000005 at step 5/);
  closeLosses(stepLosses(out), straight.losses, 'pp=2 × ep=2 → pp=2 → tp=2');
  closeParams(out, straight.out, 'pp=2 × ep=2 → pp=2 → tp=2');
  const bs = bias(straight.out, 8)!, br = bias(out, 8)!;
  bs.forEach((l, i) => l.forEach((v, e) => assert.ok(Math.abs(br[i]![e]! - v) <= 1e-6, `routing bias [${i}][${e}]: ${br[i]![e]} vs ${v} straight`)));
});

test('MoE × pipeline × expert parallel under mpirun (pipeline and all-to-all traffic over MPI) matches the launcher', async (t) => {
  if (spawnSync('which', ['mpirun']).status !== 0) { t.skip('mpirun not installed (Debian: openmpi-bin)'); return; }
  const layout = { pp: 2, dp: 2, zero: 2 }, ep = ['--parallel.ep=2'];
  const launched = ppep ?? await runMesh('moe-pp2ep2', layout, ep);
  const data = await tinyData();
  const out = tmp('moe-pp2ep2-mpi');
  const r = spawnSync('mpirun', ['--allow-run-as-root', '--oversubscribe', '-np', '4', process.execPath, CLI, 'train', ...meshArgs(data, out, layout, ep)],
    { encoding: 'utf8', timeout: 180_000, env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_WATCHDOG_S: '60' } });
  assert.equal(r.status, 0, (r.stdout + r.stderr).slice(-3000));
  assert.match(r.stdout + r.stderr, /expert parallel: ep=2.*pipeline: 2 stages/);
  assert.deepEqual([...stepLosses(out)], [...launched.losses], 'losses under mpirun vs the launcher');
  closeParams(out, launched.out, 'pp=2 × ep=2 under mpirun vs the launcher', 0);
  sameMoeMetrics(out, launched.out, 'pp=2 × ep=2 under mpirun vs the launcher', 0);
});
