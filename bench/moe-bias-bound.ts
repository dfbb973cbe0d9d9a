// How well can ANY per-expert selection bias balance each batch of a trained MoE model?
// Freezes the router of a checkpoint, routes NB training batches, and reports the per-step
// max/mean expert load (worst MoE layer, mean over batches) with: no bias; each batch's own
// exact balancing bias (an oracle); the previous batch's exact bias (the best a controller
// that reacts to the last step can do without router drift); and the single best bias for all
// NB batches (the best any fixed bias can do). What the last two leave above the
// balanced-router floor is batch-to-batch variation of the demand per expert, which no
// bias computed from past loads removes. Last, with the run's own biases: what a per-sequence
// capacity (--capacity, default 1.25) costs on these batches, dropping (GShard order) or
// rerouting (model.moe.overflow = reroute): the share of assignments dropped or moved.
//
//   node dist/bench/moe-bias-bound.js --run RUN_DIR [--data DATA_DIR] [--batches NB] [--capacity CF] [--tokenizer PATH]
import { join } from 'node:path';
import os from 'node:os';
import { MoeMlp } from '../src/nn/moe.js';
import { loadForInference } from '../src/train/train-checkpoint.js';
import { openIndexedDataset } from '../src/data/indexed-dataset-reader.js';
import { TokenLoader } from '../src/data/token-loader.js';
import { fromStorage } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { routeTokens } from '../src/nn/moe-router.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
}

/** Chosen counts per expert of top-K over scores P + b. */
function counts(P: Float64Array, n: number, E: number, K: number, b: ArrayLike<number>): Float64Array {
  const c = new Float64Array(E), s = new Float64Array(E);
  for (let t = 0; t < n; t++) {
    for (let e = 0; e < E; e++) s[e] = P[t * E + e]! + b[e]!;
    for (let k = 0; k < K; k++) {
      let bi = 0;
      for (let e = 1; e < E; e++) if (s[e]! > s[bi]!) bi = e;
      c[bi]!++;
      s[bi] = -Infinity;
    }
  }
  return c;
}

const ratio = (c: Float64Array) => Math.max(...c) / (c.reduce((a, b) => a + b, 0) / c.length);

/** The bias that balances one set of tokens exactly (Jacobi iteration on each expert's own threshold). */
function solve(P: Float64Array, n: number, E: number, K: number, iters = 60, omega = 0.5): Float64Array {
  const b = new Float64Array(E), s = new Float64Array(E), tgt = (n * K) / E;
  const idx = [...Array(E).keys()];
  for (let it = 0; it < iters; it++) {
    const enter: number[][] = Array.from({ length: E }, () => []), exit: number[][] = Array.from({ length: E }, () => []);
    const cnt = new Float64Array(E);
    for (let t = 0; t < n; t++) {
      for (let e = 0; e < E; e++) s[e] = P[t * E + e]! + b[e]!;
      idx.sort((x, y) => s[y]! - s[x]!);
      const vK = s[idx[K - 1]!]!, vK1 = s[idx[K]!]!;
      for (let r = 0; r < E; r++) {
        const e = idx[r]!;
        if (r < K) { exit[e]!.push(s[e]! - vK1); cnt[e]!++; } else enter[e]!.push(vK - s[e]!);
      }
    }
    if (Math.max(...cnt) / tgt <= 1.005) break;
    for (let e = 0; e < E; e++) {
      const r = Math.round(cnt[e]! - tgt);
      if (r > 0) { const a = exit[e]!.sort((x, y) => x - y); b[e]! -= (omega * (a[r - 1]! + (a[r] ?? a[r - 1]!))) / 2; }
      else if (r < 0) { const a = enter[e]!.sort((x, y) => x - y); b[e]! += (omega * (a[-r - 1]! + (a[-r] ?? a[-r - 1]!))) / 2; }
    }
  }
  return b;
}

function main(): void {
  const run = arg('--run', '');
  if (!run || process.argv.includes('--help')) {
    console.log('node dist/bench/moe-bias-bound.js --run RUN_DIR [--data DATA_DIR] [--batches NB] [--capacity CF] [--tokenizer PATH]');
    return;
  }
  const NB = Number(arg('--batches', '24'));
  const tok = arg('--tokenizer', '');
  const { model, config } = loadForInference(run, tok || undefined);
  const dataDir = arg('--data', config.data.dir);
  const moe = config.model.moe;
  if (!moe || moe.experts === 0) throw new Error(`${run}: not an MoE model`);
  const E = moe.experts, K = moe.topK;
  // Capture each MoE layer's router probabilities of a training-mode forward (no backward).
  const stash: Float64Array[] = [];
  const proto = MoeMlp.prototype as unknown as { record: (r: unknown, pd: ArrayLike<number>) => void };
  proto.record = function (_r, pd) { stash.push(Float64Array.from(pd)); };
  const T = config.model.seqLen, B = config.train.microBatch, N = B * T;
  const loader = new TokenLoader(openIndexedDataset(join(dataDir, 'train')), { T, seed: 5, shuffle: true, rank: 0, worldSize: 1 });
  model.train();
  const batches: Float64Array[][] = [];
  for (let i = 0; i < NB; i++) {
    const b = loader.next(B);
    stash.length = 0;
    scope(() => model.loss(fromStorage(b.x, [B, T], 'int32'), fromStorage(b.y, [B, T], 'int32')).item());
    batches.push([...stash]);
  }
  const L = batches[0]!.length;
  const own = batches.map((bl) => bl.map((P) => solve(P, N, E, K)));
  const all = [...Array(L).keys()].map((l) => {
    const P = new Float64Array(NB * N * E);
    batches.forEach((bl, i) => P.set(bl[l]!, i * N * E));
    return solve(P, NB * N, E, K);
  });
  const zero = new Float64Array(E);
  let none = 0, same = 0, prev = 0, fixed = 0;
  for (let i = 0; i < NB; i++) {
    let wn = 0, ws = 0, wp = 0, wf = 0;
    for (let l = 0; l < L; l++) {
      const P = batches[i]![l]!;
      wn = Math.max(wn, ratio(counts(P, N, E, K, zero)));
      ws = Math.max(ws, ratio(counts(P, N, E, K, own[i]![l]!)));
      if (i > 0) wp = Math.max(wp, ratio(counts(P, N, E, K, own[i - 1]![l]!)));
      wf = Math.max(wf, ratio(counts(P, N, E, K, all[l]!)));
    }
    none += wn; same += ws; prev += wp; fixed += wf;
  }
  console.log(`${run}: ${NB} training batches of ${N} tokens, router frozen, worst of ${L} MoE layers, mean over batches:`);
  console.log(`| bias | per-step max/mean |\n|---|---:|\n| none | ${(none / NB).toFixed(3)} |\n| each batch's own exact bias (oracle) | ${(same / NB).toFixed(3)} |\n| the previous batch's exact bias | ${(prev / (NB - 1)).toFixed(3)} |\n| the single best bias for all ${NB} batches | ${(fixed / NB).toFixed(3)} |`);
  // Per-sequence capacity with the run's biases: drop vs reroute, every layer and batch.
  const cf = Number(arg('--capacity', '1.25'));
  if (!(cf > 0)) throw new Error(`--capacity must be > 0, got ${arg('--capacity', '')}`);
  const biases = model.moeLayers().map((m) => m.routingBias);
  let drop = 0, rrMoved = 0, rrDrop = 0, n = 0, worstDrop = 0, worstRr = 0;
  for (const bl of batches) {
    bl.forEach((P, l) => {
      const o = { groups: B, groupSize: T, experts: E, topK: K, capacityFactor: cf, swipe: false, bias: biases[l] ?? null };
      const a = routeTokens(P, o), b = routeTokens(P, { ...o, reroute: true });
      const kept = (r: typeof a) => Math.max(...r.counts) / (r.srcRow.length / E);
      drop += a.dropped; rrMoved += b.moved; rrDrop += b.dropped; n += N * K;
      worstDrop = Math.max(worstDrop, kept(a)); worstRr = Math.max(worstRr, kept(b));
    });
  }
  const pc = (x: number) => `${((100 * x) / n).toFixed(2)}%`;
  // Routing time of one layer's batch (2048 tokens), drop vs reroute interleaved, median of reps.
  const P0 = batches[0]![0]!, o0 = { groups: B, groupSize: T, experts: E, topK: K, capacityFactor: cf, swipe: false, bias: biases[0] ?? null };
  const tDrop: number[] = [], tRr: number[] = [];
  const load0 = os.loadavg();
  for (let rep = 0; rep < 15; rep++) {
    let t = performance.now(); routeTokens(P0, o0); tDrop.push(performance.now() - t);
    t = performance.now(); routeTokens(P0, { ...o0, reroute: true }); tRr.push(performance.now() - t);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`routing ${N} tokens (one layer, one step): drop ${med(tDrop).toFixed(2)} ms, reroute ${med(tRr).toFixed(2)} ms (median of 15, interleaved; ${os.cpus()[0]?.model ?? '?'}, load ${load0.map((x) => x.toFixed(2)).join(' ')} → ${os.loadavg().map((x) => x.toFixed(2)).join(' ')})`);
  console.log(`\nper-sequence capacity ${cf} with the run's biases (${biases.some((b) => b) ? 'balance = bias' : 'no bias'}), all ${NB} batches × ${L} layers:\n| overflow | dropped | moved | max/mean rows, worst batch and layer |\n|---|---:|---:|---:|\n| drop | ${pc(drop)} | 0 | ${worstDrop.toFixed(3)} |\n| reroute | ${pc(rrDrop)} | ${pc(rrMoved)} | ${worstRr.toFixed(3)} |`);
}

main();
process.exit(0);
