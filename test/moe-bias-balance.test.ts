// balance = bias (DeepSeek-V3 auxiliary-loss-free balancing) with the margin-measured step
// (moe-router.ts): the offsets read off the selection-margin histograms bring each expert to
// the mean load, the update balances synthetic routers (skewed, near-uniform, with a shared
// preference, drifting) on fresh batches, and the histograms add across ranks exactly.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addSelectionMargins, balancingOffsets, marginBin, marginHistogramSize, MARGIN_BINS, routeTokens, updateRoutingBias,
} from '../src/nn/moe-router.js';
import { denseMoe } from '../src/nn/moe-config.js';
import { Rng } from '../src/core/rng.js';

const E = 8, K = 2;

/**
 * A batch of N tokens' router probabilities: logits N(0, sigma) per token plus a preference
 * skew·d_e shared by every token (sigma 0.02 ≈ a freshly initialized router, entropy ≈ ln E).
 */
function batch(rng: Rng, N: number, sigma: number, skew: number, d: Float64Array): Float64Array {
  const p = new Float64Array(N * E);
  rng.fillNormal(p, 0, sigma);
  for (let t = 0; t < N; t++) {
    let z = 0;
    for (let e = 0; e < E; e++) { p[t * E + e] = Math.exp(p[t * E + e]! + skew * d[e]!); z += p[t * E + e]!; }
    for (let e = 0; e < E; e++) p[t * E + e]! /= z;
  }
  return p;
}

function preference(seed: number): Float64Array {
  const d = new Float64Array(E);
  new Rng(seed).fillNormal(d);
  d[0] = 1.5; // one clearly favoured expert
  return d;
}

/** Chosen counts per expert (before capacity) of one routing of `probs` with `bias`. */
function routed(probs: Float64Array, N: number, bias: Float32Array | null): Float64Array {
  const r = routeTokens(probs, { groups: 1, groupSize: N, experts: E, topK: K, capacityFactor: 0, swipe: false, bias });
  return Float64Array.from(r.chosen);
}

const ratio = (c: ArrayLike<number>) => Math.max(...Array.from(c)) / ((Array.from(c).reduce((a, b) => a + b, 0)) / E);

test('margin bins: monotone, bin 0 holds ties, the last bin is open-ended', () => {
  assert.equal(marginBin(0), 0);
  let prev = 0;
  for (let m = 1e-9; m < 10; m *= 1.1) { const b = marginBin(m); assert.ok(b >= prev && b < MARGIN_BINS); prev = b; }
  assert.equal(marginBin(1e6), MARGIN_BINS - 1);
});

test('balancingOffsets: each expert\'s own offset brings its count to the mean, within the tokens of the bin it lands in', () => {
  const rng = new Rng(3), N = 2048;
  for (const [sigma, skew] of [[1, 1], [0.02, 0.02], [0.02, 0.3]] as const) {
    const probs = batch(rng, N, sigma, skew, preference(5));
    const bias = new Float32Array(E);
    const c = routed(probs, N, bias);
    const hist = new Float64Array(marginHistogramSize(E));
    addSelectionMargins(probs, N, E, K, bias, hist);
    // The histograms count every (token, expert) pair once: chosen ones on side 0, the others on side 1.
    for (let e = 0; e < E; e++) {
      let s0 = 0, s1 = 0;
      for (let i = 0; i < MARGIN_BINS; i++) { s0 += hist[(e * 2) * MARGIN_BINS + i]!; s1 += hist[(e * 2 + 1) * MARGIN_BINS + i]!; }
      assert.equal(s0, c[e]);
      assert.equal(s1, N - c[e]!);
    }
    const d = balancingOffsets(hist, c, E);
    const mean = (N * K) / E;
    for (let e = 0; e < E; e++) {
      if (c[e] === mean) { assert.equal(d[e], 0); continue; }
      assert.equal(Math.sign(d[e]!), c[e]! > mean ? -1 : 1, `expert ${e}: count ${c[e]} vs mean ${mean}, offset ${d[e]}`);
      const b = new Float32Array(E);
      b[e] = d[e]!;
      const got = routed(probs, N, b)[e]!;
      // the offset is exact up to where inside its bin the threshold falls
      const side = c[e]! > mean ? 0 : 1, bin = marginBin(Math.abs(d[e]!));
      const slack = hist[(e * 2 + side) * MARGIN_BINS + bin]! + 1;
      assert.ok(Math.abs(got - mean) <= slack, `sigma ${sigma} skew ${skew} expert ${e}: count ${c[e]} → ${got} with its offset ${d[e]} (mean ${mean}, bin holds ${slack - 1})`);
    }
  }
});

test('the bias update balances skewed, near-uniform, shared-preference and drifting routers on fresh batches within 20 steps', () => {
  // Tokens per step as in moe-tiny (16 × 128); a new batch every step, as in training.
  const N = 2048, rate = denseMoe().biasRate;
  // Bounds on the mean max/mean load: a perfectly balanced router at this batch already shows
  // ≈ 1.06 (sampling noise of 4096 assignments over 8 experts); a drifting router adds the
  // one-step lag of any controller that reacts to the last step's load.
  const cases: { sigma: number; skew: number; drift: number; bound: number }[] = [
    { sigma: 1, skew: 1, drift: 0, bound: 1.12 },
    { sigma: 0.02, skew: 0.02, drift: 0, bound: 1.12 },
    { sigma: 0.02, skew: 0.3, drift: 0, bound: 1.12 },
    // the shared preference takes a random-walk step of 1/20 of the tokens' spread every step
    // (a controller that reacts to the last step's load lags one step: at 1/3 of the spread
    // per step no such controller holds 1.3)
    { sigma: 0.05, skew: 0.3, drift: 0.05 / 20, bound: 1.2 },
  ];
  for (const cs of cases) {
    const rng = new Rng(7), d = preference(9);
    const bias = new Float32Array(E);
    let before = 0, sum = 0, worst = 0, n = 0;
    for (let step = 0; step < 60; step++) {
      if (cs.drift) for (let e = 0; e < E; e++) d[e]! += (cs.drift / cs.skew) * rng.normal();
      const probs = batch(rng, N, cs.sigma, cs.skew, d);
      const c = routed(probs, N, bias);
      if (step === 0) before = ratio(c);
      if (step >= 20) { const r = ratio(c); sum += r; worst = Math.max(worst, r); n++; }
      const hist = new Float64Array(marginHistogramSize(E));
      addSelectionMargins(probs, N, E, K, bias, hist);
      updateRoutingBias(bias, c, hist, rate);
    }
    const label = `sigma ${cs.sigma} skew ${cs.skew} drift ${cs.drift}`;
    assert.ok(before > 1.5, `${label}: skewed before balancing (${before})`);
    assert.ok(sum / n <= cs.bound, `${label}: mean max/mean load over steps 20-59: ${sum / n} (worst ${worst}, before ${before})`);
    assert.ok(worst <= 1.3, `${label}: worst max/mean load over steps 20-59: ${worst}`);
  }
});

test('bias update: the histograms of two ranks\' halves add to the whole batch\'s, so every rank computes the same biases', () => {
  const rng = new Rng(13), N = 1024;
  const probs = batch(rng, N, 0.05, 0.3, preference(2));
  const bias = Float32Array.from([0.01, -0.02, 0, 0.03, -0.01, 0, 0.005, -0.015]);
  const whole = new Float64Array(marginHistogramSize(E));
  addSelectionMargins(probs, N, E, K, bias, whole);
  const a = new Int32Array(marginHistogramSize(E)), b = new Int32Array(marginHistogramSize(E));
  addSelectionMargins(probs.subarray(0, (N / 2) * E), N / 2, E, K, bias, a);
  addSelectionMargins(probs.subarray((N / 2) * E), N / 2, E, K, bias, b);
  for (let i = 0; i < whole.length; i++) assert.equal(a[i]! + b[i]!, whole[i]);
  const c = routed(probs, N, bias);
  const ca = routed(probs.subarray(0, (N / 2) * E) as Float64Array, N / 2, bias), cb = routed(probs.subarray((N / 2) * E) as Float64Array, N / 2, bias);
  const sumC = ca.map((x, e) => x + cb[e]!);
  assert.deepEqual(Array.from(sumC), Array.from(c));
  const b1 = Float32Array.from(bias), b2 = Float32Array.from(bias);
  updateRoutingBias(b1, c, whole, 0.5);
  updateRoutingBias(b2, sumC, Float64Array.from(a, (x, i) => x + b[i]!), 0.5);
  assert.deepEqual(Array.from(b1), Array.from(b2));
  // and the update is not a no-op: the biases moved, re-centred to mean 0
  assert.ok(b1.some((v, e) => v !== bias[e]));
  assert.ok(Math.abs(b1.reduce((s, v) => s + v, 0)) < 1e-6);
});
