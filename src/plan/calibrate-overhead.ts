// The overhead terms of `athanor plan --calibrate` (read by src/plan/overhead-terms.ts):
//   - the framework's fixed cost per traced op: the real GPT (forward recording, backward)
//     at shapes where compute is ~0 (d 16, T 8, 2 sequences), its CPU seconds per forward
//     and per backward divided by the non-view ops the meta trace of the same model counts
//     (views cost dispatch too; their share is folded into the others, as the plan skips them);
//   - the co-running slowdown: the probe (calibrate-overhead-probe.ts, the real GPT at
//     gpt-tiny's widths with its optimizer) timed alone and as one process per core started
//     together, alternately; the factor is the median co-running step over the median alone.
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { GPT } from '../nn/gpt.js';
import { presetConfig } from '../train/config.js';
import { fromStorage } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { backward } from '../autograd/tape.js';
import { projectRoot } from '../backend/native.js';
import { traceGpt } from './models.js';
import { forwardDetached, release } from '../parallel/pipeline/graph-lifetime.js';

/** The probe model (calibrate-overhead-probe.ts): gpt-tiny's widths, 2 blocks, 8 sequences (a step of ~0.1 s here), so that a co-running measurement sees a training step's mix of GEMMs and memory-bound ops. */
export const PROBE = { nLayer: 2, microBatch: 8 };

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
};

/** CPU seconds per traced forward and backward op of a real model step whose compute is ~0. */
export function opFixedCosts(reps: number): { forward: number; backward: number; opsForward: number; opsBackward: number } {
  const base = presetConfig('gpt-tiny').model;
  const cfg = { ...base, nLayer: 2, nHead: 2, dModel: 16, dFF: 64, vocabSize: 64, seqLen: 8 };
  const model = new GPT(cfg, { seed: 5 });
  const B = 2, T = cfg.seqLen;
  const idx = fromStorage(new Int32Array(B * T).map((_, i) => (i * 5) % cfg.vocabSize), [B, T], 'int32');
  const tr = traceGpt(cfg, { microBatch: B });
  const opsForward = tr.ops.filter((o) => o.phase === 'forward' && o.cls !== 'view').length;
  const opsBackward = tr.ops.filter((o) => o.phase === 'backward' && o.cls !== 'view').length;
  // Each rep: `inner` steps (each a few ms), forward and backward timed apart.
  const inner = 50;
  let fwd = 0;
  const run = (): number => {
    fwd = 0;
    let bwd = 0;
    for (let i = 0; i < inner; i++) {
      scope(() => {
        const c0 = process.cpuUsage();
        const loss = model.loss(idx, idx);
        const c1 = process.cpuUsage(c0);
        backward(loss);
        const c2 = process.cpuUsage(c0);
        fwd += (c1.user + c1.system) / 1e6;
        bwd += (c2.user + c2.system - c1.user - c1.system) / 1e6;
      });
      for (const p of model.parameters()) { p.grad?.dispose(); p.grad = null; }
    }
    return bwd;
  };
  const f: number[] = [], b: number[] = [];
  run();
  for (let r = 0; r < reps; r++) { b.push(run()); f.push(fwd); }
  return { forward: median(f) / inner / opsForward, backward: median(b) / inner / opsBackward, opsForward, opsBackward };
}

/**
 * The pipeline engine's own CPU seconds per schedule action (pipeline-engine.ts): a forward
 * run by forwardDetached (its graph kept alive across other actions) and its backward
 * followed by release(), against the same forward + backward in one scope, on the model of
 * opFixedCosts (compute ~0), interleaved; half the difference per forward-backward pair.
 */
export function pipelineActionCost(reps: number): number {
  const base = presetConfig('gpt-tiny').model;
  const cfg = { ...base, nLayer: 2, nHead: 2, dModel: 16, dFF: 64, vocabSize: 64, seqLen: 8 };
  const model = new GPT(cfg, { seed: 5 });
  const B = 2, T = cfg.seqLen;
  // A fresh input tensor per action, as the engine makes one per micro-batch (release() disposes it with the graph).
  const ids = new Int32Array(B * T).map((_, i) => (i * 5) % cfg.vocabSize);
  const inner = 50;
  const clear = (): void => { for (const p of model.parameters()) { p.grad?.dispose(); p.grad = null; } };
  const cpu = (fn: () => void): number => { const c0 = process.cpuUsage(); for (let i = 0; i < inner; i++) { fn(); clear(); } const d = process.cpuUsage(c0); return (d.user + d.system) / 1e6 / inner; };
  const plain = (): void => scope(() => { const x = fromStorage(ids, [B, T], 'int32'); backward(model.loss(x, x)); });
  const engine = (): void => { const x = fromStorage(ids, [B, T], 'int32'); const g = forwardDetached(() => model.loss(x, x)); backward(g.out); release(g); x.dispose(); };
  cpu(plain); cpu(engine);
  const diffs: number[] = [];
  for (let r = 0; r < reps; r++) { const a = cpu(plain), b = cpu(engine); diffs.push(b - a); }
  return Math.max(0, median(diffs) / 2);
}

/** The median over rounds of together[i] / alone[i] (each round's two runs taken back to back). */
export function pairedRatio(alone: readonly number[], together: readonly number[]): number {
  if (alone.length !== together.length || !alone.length) throw new Error(`pairedRatio: ${alone.length} alone runs against ${together.length} together`);
  return median(alone.map((a, i) => together[i]! / a));
}

/** Runs `k` probe processes that start their timed steps together; each one's median step (wall seconds). */
async function probeRun(k: number, steps: number): Promise<{ step: number; cpu: number | null; helperPerStep: number | null }[]> {
  const script = join(projectRoot(), 'dist', 'src', 'plan', 'calibrate-overhead-probe.js');
  const kids = Array.from({ length: k }, () => spawn(process.execPath, [script, String(steps)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ATHANOR_QUIET: '1' } }));
  const outs = kids.map(() => ({ text: '', err: '' }));
  const ready = kids.map((p, i) => new Promise<void>((resolve, reject) => {
    p.stdout.on('data', (d: Buffer) => { outs[i]!.text += d.toString(); if (outs[i]!.text.includes('READY')) resolve(); });
    p.stderr.on('data', (d: Buffer) => { outs[i]!.err += d.toString(); });
    p.on('exit', (code) => { if (!outs[i]!.text.includes('READY')) reject(new Error(`plan --calibrate: the co-running probe exited with ${code} before its steps:\n${outs[i]!.err.slice(-1500)}`)); });
  }));
  const done = kids.map((p) => new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code))));
  try {
    await Promise.all(ready);
  } catch (e) {
    for (const p of kids) p.kill();
    throw e;
  }
  for (const p of kids) p.stdin.write('GO\n');
  const codes = await Promise.all(done);
  return outs.map((o, i) => {
    const m = /ATHANOR_PROBE (\{.*\})/.exec(o.text);
    if (codes[i] !== 0 || !m) throw new Error(`plan --calibrate: co-running probe ${i} failed (exit ${codes[i]}):\n${o.err.slice(-1500)}`);
    const r = JSON.parse(m[1]!) as { wall: number[]; cpu: number[]; helperPerStep: number | null };
    return { step: median(r.wall), cpu: r.cpu.length ? median(r.cpu) : null, helperPerStep: r.helperPerStep };
  });
}

/**
 * The slowdown of a device's compute when every core of the node computes, from the probe
 * run alone and as one process per core, alternately, `reps` times each:
 *   - the main thread's CPU seconds per step together over alone (the shared last-level
 *     cache and memory bandwidth): CPU time, not the wall clock, so that other processes on
 *     a shared machine, which take turns on the cores, do not count as co-running (a wall
 *     clock ratio under load 7 read 2.5×);
 *     (at least 1: a lower ratio is noise);
 *   - the helper threads' CPU (V8's GC and compiler workers, measured alone) per traced op of
 *     the probe's step, which the planner adds to the busy time, and to the wall step where
 *     every core computes (overhead-terms.ts: no idle core is left for them).
 * Factor null on a one-core machine or without Linux /proc (no thread CPU times).
 */
export async function coRunSlowdown(reps: number, steps = 8): Promise<{ cores: number; factor: number | null; cpuFactor: number | null; wallFactor: number | null; alone: number; together: number; helperPerOp: number | null }> {
  const cores = cpus().length;
  const alone: number[] = [], together: number[] = [], cpuAlone: number[] = [], cpuTogether: number[] = [], shares: number[] = [];
  for (let r = 0; r < reps; r++) {
    const a = (await probeRun(1, steps))[0]!;
    alone.push(a.step);
    if (a.cpu !== null) cpuAlone.push(a.cpu);
    if (a.helperPerStep !== null) shares.push(a.helperPerStep);
    if (cores > 1) {
      const t = await probeRun(cores, steps);
      together.push(median(t.map((x) => x.step)));
      const c = t.map((x) => x.cpu).filter((x): x is number => x !== null);
      if (c.length) cpuTogether.push(median(c));
    }
  }
  const a = median(alone), t = cores > 1 ? median(together) : a;
  // Per traced op of the probe's step (its meta trace, the count the planner prices).
  const probeCfg = presetConfig('gpt-tiny').model;
  const probeOps = traceGpt({ ...probeCfg, nLayer: PROBE.nLayer }, { microBatch: PROBE.microBatch }).ops.filter((o) => o.cls !== 'view').length;
  const helperPerOp = shares.length ? median(shares) / probeOps : null;
  // The median of each round's ratio (together over the alone run just before it), not the
  // ratio of the two medians: another process's load that comes and goes between rounds then
  // moves both runs of a round alike, where the ratio of medians paired an alone run of one
  // load with a together run of another (quiet calibrations a minute apart read ×1.25 and ×1.1).
  const cpuFactor = cores > 1 && cpuAlone.length && cpuAlone.length === cpuTogether.length ? pairedRatio(cpuAlone, cpuTogether) : null;
  // A ratio under 1 (co-running faster than alone) is the noise of a shared machine, not a speed-up: kept at 1.
  const factor = cpuFactor !== null ? Math.max(1, cpuFactor) : null;
  return { cores, factor, cpuFactor, wallFactor: cores > 1 ? t / a : null, alone: a, together: t, helperPerOp };
}
