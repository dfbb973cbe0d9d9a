// Tensor-parallel benchmark: tokens/s per layout on this machine (tp=2, tp=2 with
// sequence parallelism, next to dp=2 and one process), tensor-parallel payload per
// step counted at the collective calls vs the closed-form count, and forward
// activation memory per rank (sequence parallelism should cut it by about tp×).
//   node dist/bench/tp-bench.js [--quick] [--preset gpt-tiny|gpt-small] [--reps N] [--steps N] [--breakdown]
// (--breakdown: also list rank 0's forward activations by producing op and shape, first rep)
// Each layout runs as real rank processes under `athanor launch`; layouts are
// interleaved over reps and medians reported, with the load average before and after.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { IndexedDatasetWriter } from '../src/data/indexed-dataset-writer.js';
import { projectRoot } from '../src/backend/native.js';
import { Rng } from '../src/core/rng.js';
import { pool } from '../src/core/buffer-pool.js';
import { presetConfig, type TrainConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { asGpt } from '../src/train/parallel-layer.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import type { Node } from '../src/autograd/node.js';
import { scope } from '../src/core/scope.js';

const argv = process.argv.slice(2);
const flag = (k: string, d: string) => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1]! : d; };
const quick = argv.includes('--quick');
const breakdown = argv.includes('--breakdown');

interface Layout { name: string; tp: number; dp: number; sp: boolean }
const LAYOUTS: Layout[] = [
  { name: '1 process × 2 threads', tp: 1, dp: 1, sp: false },
  { name: 'dp=2', tp: 1, dp: 2, sp: false },
  { name: 'tp=2', tp: 2, dp: 1, sp: false },
  { name: 'tp=2 sp', tp: 2, dp: 1, sp: true },
];

function rankCfg(preset: string, data: string, out: string, l: Layout, steps: number): TrainConfig {
  const c = presetConfig(preset);
  const B = c.train.microBatch;
  c.data.dir = data;
  c.model.vocabSize = 8192 > c.model.vocabSize ? c.model.vocabSize : 8192;
  c.train = { ...c.train, steps, evalEvery: 0, checkpointEvery: 0, evalBatches: 1, logEvery: 1000, outDir: out, threads: l.tp * l.dp === 1 ? 2 : 1, microBatch: B / l.dp, maxSeconds: 0 };
  c.optim.warmupSteps = 1;
  c.parallel = { ...c.parallel, tp: l.tp, dp: l.dp, sp: l.sp };
  return c;
}

/** Payload elements per step a tensor-parallel rank sends (ring collectives), from the model shape. */
export function tpFormula(c: TrainConfig): number {
  const { tp, sp } = c.parallel;
  if (tp === 1) return 0;
  const L = c.model.nLayer, C = c.model.dModel, T = c.model.seqLen, N = c.train.microBatch * T, n = N * C;
  const ring = (tp - 1) / tp;
  // Non-sp: all-reduces of the embedding, 2 per layer forward (attention and MLP outputs), 2 per
  // layer backward (their inputs) and the head's input backward: (4L+2)·n, plus the loss's 3N.
  // sp: the same traffic as all-gathers + reduce-scatters ((8L+4) of n, half the ring cost each),
  // plus the norms', row biases' and position table's partial gradients summed over the group;
  // and sp re-gathers each block's two region inputs in backward (2L of n more: only the
  // sequence shard is kept between forward and backward, as in Megatron).
  const allReduced = 3 * N + (sp ? (2 * L + 1) * 2 * C + 2 * L * C + (c.model.positions === 'learned' ? T * C : 0) : (4 * L + 2) * n);
  const gathered = sp ? (10 * L + 4) * n : 0;
  return c.train.gradAccum * (2 * ring * allReduced + ring * gathered);
}

/**
 * Where the forward activations are: bytes of every storage the tape reaches from the loss
 * (node outputs and saved tensors, each storage once), by producing op and shape.
 */
function activationBreakdown(loss: Tensor): [string, number][] {
  const nodes: Node[] = [];
  const seenNode = new Set<Node>(), seenBox = new Set<unknown>(), by = new Map<string, number>();
  const stack = loss.node ? [loss.node] : [];
  while (stack.length) {
    const n = stack.pop()!;
    if (seenNode.has(n)) continue;
    seenNode.add(n);
    nodes.push(n);
    for (const i of n.inputs) if (i.node) stack.push(i.node);
  }
  for (const n of nodes) {
    for (const [t, tag] of [[n.out, 'out'], ...n.saved.map((x) => [x, 'saved'] as const)] as const) {
      if (seenBox.has(t.box) || !t.box.data) continue;
      seenBox.add(t.box);
      const k = `${n.op} ${tag} ${t.shape.join('x')}`;
      by.set(k, (by.get(k) ?? 0) + t.box.data.byteLength);
    }
  }
  return [...by].sort((a, b) => b[1] - a[1]);
}

async function rankMain(): Promise<void> {
  const l = JSON.parse(flag('layout', '{}')) as Layout;
  const cfg = rankCfg(flag('preset', 'gpt-tiny'), flag('data', ''), flag('out', ''), l, Number(flag('steps', '6')));
  const { distributedLayerFromEnv } = await import('../src/train/dist-setup.js');
  const layer = await distributedLayerFromEnv(cfg);
  const times: number[] = [];
  const sent: number[] = [];
  let last = performance.now();
  const tpSent = () => (layer as unknown as { tpSentElements?: number } | null)?.tpSentElements ?? 0;
  try {
    const r = await train(cfg, {
      quiet: true, parallel: layer ?? undefined,
      onStep: () => { const now = performance.now(); times.push(now - last); last = now; sent.push(tpSent()); },
    });
    // Forward activation memory: bytes the forward pass holds for backward (pool live bytes).
    const T = cfg.model.seqLen, B = cfg.train.microBatch;
    const rng = new Rng(3);
    const ids = Int32Array.from({ length: B * T }, () => rng.int(cfg.model.vocabSize));
    const live = () => { const s = pool.stats(); return s.allocatedBytes - s.pooledBytes; };
    let act = 0;
    scope(() => {
      const before = live();
      const loss = asGpt(r.model).loss(fromStorage(ids, [B, T], 'int32'), fromStorage(ids, [B, T], 'int32'));
      act = live() - before;
      if (argv.includes('--breakdown')) console.log(`BREAKDOWN ${JSON.stringify({ rank: layer?.rank ?? 0, rows: activationBreakdown(loss) })}`);
    });
    const stepMs = times.slice(1).sort((a, b) => a - b)[Math.floor((times.length - 1) / 2)]!;
    const perStep = sent.length > 2 ? sent[2]! - sent[1]! : 0;
    console.log(`RESULT ${JSON.stringify({ rank: layer?.rank ?? 0, stepMs, tokensPerSec: (B * l.dp * T) / (stepMs / 1000), tpSentPerStep: perStep, formula: tpFormula(cfg), activationBytes: act })}`);
  } finally {
    await layer?.close();
  }
}

function syntheticData(dir: string, V: number): void {
  const rng = new Rng(7);
  for (const [split, n] of [['train', 200_000], ['val', 20_000]] as const) {
    const w = new IndexedDatasetWriter(join(dir, split), { dtype: 'uint16' });
    const doc = new Uint16Array(1000);
    for (let i = 0; i < n; i += doc.length) {
      for (let j = 0; j < doc.length; j++) doc[j] = rng.int(V);
      w.addDocument(doc);
    }
    w.finish();
  }
  writeFileSync(join(dir, 'meta.json'), JSON.stringify({ tokenizer: { vocabSize: V } }));
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2; };

function cpuFlags(): string {
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const flags = /flags\s*:\s*(.*)/.exec(info)?.[1]?.split(' ') ?? [];
  return ['avx2', 'fma', 'avx512f', 'avx512_bf16'].filter((f) => flags.includes(f)).join(' ') || 'none of avx2/fma/avx512';
}

async function parentMain(): Promise<void> {
  const preset = flag('preset', 'gpt-tiny');
  const reps = Number(flag('reps', quick ? '2' : '3'));
  const steps = Number(flag('steps', quick ? '5' : '8'));
  const data = mkdtempSync(join(tmpdir(), 'athanor-tpbench-'));
  const cli = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');
  const self = join(projectRoot(), 'dist', 'bench', 'tp-bench.js');
  const load0 = loadavg();
  console.log(`machine: ${cpus()[0]?.model} × ${cpus().length}, flags: ${cpuFlags()}; load before ${load0.map((x) => x.toFixed(2)).join(' / ')}`);
  syntheticData(data, Math.min(8192, presetConfig(preset).model.vocabSize));
  const res = new Map<string, { tps: number[]; sent: number; formula: number; act: number }>();
  try {
    for (let rep = 0; rep < reps; rep++) {
      for (const l of LAYOUTS) {
        const out = mkdtempSync(join(tmpdir(), 'athanor-tpbench-run-'));
        const args = [self, '--rank', '--layout', JSON.stringify(l), '--preset', preset, '--data', data, '--out', out, '--steps', String(steps), ...(breakdown && rep === 0 ? ['--breakdown'] : [])];
        const n = l.tp * l.dp;
        const r = n === 1 ? spawnSync(process.execPath, args, { encoding: 'utf8' })
          : spawnSync(process.execPath, [cli, 'launch', '--nproc-per-node', String(n), '--', 'node', ...args], { encoding: 'utf8' });
        rmSync(out, { recursive: true, force: true });
        if (r.status !== 0) throw new Error(`${l.name} failed:\n${(r.stdout + r.stderr).slice(-2000)}`);
        const rows = (r.stdout + r.stderr).split('\n').filter((x) => x.includes('RESULT ')).map((x) => JSON.parse(x.slice(x.indexOf('RESULT ') + 7)) as { rank: number; tokensPerSec: number; tpSentPerStep: number; formula: number; activationBytes: number });
        const r0 = rows.find((x) => x.rank === 0)!;
        const e = res.get(l.name) ?? { tps: [], sent: r0.tpSentPerStep, formula: r0.formula, act: Math.max(...rows.map((x) => x.activationBytes)) };
        e.tps.push(r0.tokensPerSec);
        res.set(l.name, e);
        console.log(`  rep ${rep + 1}: ${l.name}: ${r0.tokensPerSec.toFixed(0)} tokens/s`);
        for (const line of (r.stdout + r.stderr).split('\n').filter((x) => x.includes('BREAKDOWN '))) {
          const b = JSON.parse(line.slice(line.indexOf('BREAKDOWN ') + 10)) as { rank: number; rows: [string, number][] };
          if (b.rank !== 0) continue;
          console.log(`    forward activations of rank 0 by producing op (MiB): ${b.rows.filter(([, v]) => v >= 2 ** 16).map(([k, v]) => `${k} ${(v / 2 ** 20).toFixed(2)}`).join(', ')}`);
        }
      }
    }
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
  const load1 = loadavg();
  const c = presetConfig(preset).model;
  console.log(`\n${preset} (L${c.nLayer} C${c.dModel} H${c.nHead} T${c.seqLen}, global batch ${presetConfig(preset).train.microBatch}), ${steps} steps, median of ${reps} interleaved reps; load after ${load1.map((x) => x.toFixed(2)).join(' / ')}`);
  console.log('layout                  tokens/s   TP payload/step (counted | formula)   forward activations/rank');
  for (const [name, e] of res) {
    const mb = (x: number) => `${(x / 2 ** 20).toFixed(2)} MiB`;
    console.log(`${name.padEnd(22)} ${median(e.tps).toFixed(0).padStart(9)}   ${e.formula ? `${mb(4 * e.sent)} | ${mb(4 * e.formula)}` : '–'.padEnd(21)}   ${mb(e.act)}`);
  }
}

if (argv.includes('--rank')) rankMain().catch((e: unknown) => { console.error(e); process.exit(1); });
else parentMain().catch((e: unknown) => { console.error(e); process.exit(1); });
