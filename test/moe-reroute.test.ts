// model.moe.overflow = reroute (moe-reroute.ts): per routing group, the over-capacity
// experts' selection scores are lowered until the group fits, so the tokens with the smallest
// selection margin move to their next choice instead of tokens being dropped in position order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { routeTokens, type RouteOptions } from '../src/nn/moe-router.js';
import { fitCapacityOffsets } from '../src/nn/moe-reroute.js';
import { Rng } from '../src/core/rng.js';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { parseArgs } from '../src/train/overrides.js';
import { validateTrainConfig } from '../src/train/config.js';

/** N tokens' probabilities over E experts: logits N(0, 1) plus skew[e] shared by every token. */
function probsOf(seed: number, N: number, E: number, skew: number[]): Float64Array {
  const rng = new Rng(seed), p = new Float64Array(N * E);
  rng.fillNormal(p, 0, 1);
  for (let t = 0; t < N; t++) {
    let z = 0;
    for (let e = 0; e < E; e++) { p[t * E + e] = Math.exp(p[t * E + e]! + (skew[e] ?? 0)); z += p[t * E + e]!; }
    for (let e = 0; e < E; e++) p[t * E + e]! /= z;
  }
  return p;
}

/** Per group, the kept rows of each expert. */
function groupCounts(r: ReturnType<typeof routeTokens>, G: number, T: number, E: number, K: number): Int32Array[] {
  return Array.from({ length: G }, (_, g) => {
    const c = new Int32Array(E);
    for (let a = g * T * K; a < (g + 1) * T * K; a++) if (r.slot[a]! >= 0) c[r.expert[a]!]!++;
    return c;
  });
}

test('reroute: every sequence fits the capacity with nothing dropped where plain capacity drops, and the router\'s own choices are still what is reported', () => {
  const G = 6, T = 64, E = 8, K = 2;
  const probs = probsOf(1, G * T, E, [1.2, 0.6, 0.3]);
  const o: RouteOptions = { groups: G, groupSize: T, experts: E, topK: K, capacityFactor: 1.25, swipe: false, bias: null };
  const plain = routeTokens(probs, o), rr = routeTokens(probs, { ...o, reroute: true });
  assert.ok(plain.dropped > 0, 'the skewed router overflows');
  assert.equal(rr.dropped, 0);
  assert.ok(rr.moved > 0);
  for (const c of groupCounts(rr, G, T, E, K)) assert.ok(Math.max(...c) <= rr.capacity, `group counts ${c} over capacity ${rr.capacity}`);
  // what the bias update and the aux loss see: the router's choices before reroute and capacity
  assert.deepEqual(Array.from(rr.chosen), Array.from(plain.chosen));
  // a token never takes the same expert twice, and the rows are grouped by expert
  for (let t = 0; t < G * T; t++) assert.notEqual(rr.expert[t * K], rr.expert[t * K + 1]);
  assert.equal(rr.srcRow.length, G * T * K);
  // max/mean of the step's rows is bounded by the capacity factor
  const ratio = Math.max(...rr.counts) / (rr.srcRow.length / E);
  assert.ok(ratio <= rr.capacity / ((T * K) / E) + 1e-12, `max/mean ${ratio}`);
  // with a selection bias as well (balance = bias)
  const bias = Float32Array.from([0.05, -0.02, 0, 0.01, -0.03, 0, 0.02, -0.01]);
  const rb = routeTokens(probs, { ...o, bias, reroute: true });
  assert.equal(rb.dropped, 0);
  for (const c of groupCounts(rb, G, T, E, K)) assert.ok(Math.max(...c) <= rb.capacity);
  assert.deepEqual(Array.from(rb.chosen), Array.from(routeTokens(probs, { ...o, bias }).chosen));
});

test('reroute: with one overloaded expert, the tokens that leave it are exactly those with the smallest selection margin', () => {
  const T = 200, E = 6, K = 2;
  const probs = probsOf(4, T, E, [1.0]);
  const o: RouteOptions = { groups: 1, groupSize: T, experts: E, topK: K, capacityFactor: 1.5, swipe: false, bias: null };
  const plain = routeTokens(probs, { ...o, capacityFactor: 0 }), rr = routeTokens(probs, { ...o, reroute: true });
  const cap = rr.capacity;
  const load0 = plain.chosen[0]!;
  assert.ok(load0 > cap, `expert 0 overloaded (${load0} > ${cap})`);
  for (let e = 1; e < E; e++) assert.ok(plain.chosen[e]! + (load0 - cap) <= cap, 'the others have room for all of its overflow');
  // margin of expert 0 for each token that chose it: its score minus the best unchosen score
  const margin: { t: number; m: number }[] = [];
  for (let t = 0; t < T; t++) {
    const ks = [plain.expert[t * K]!, plain.expert[t * K + 1]!];
    if (!ks.includes(0)) continue;
    let best = -Infinity;
    for (let e = 0; e < E; e++) if (!ks.includes(e)) best = Math.max(best, probs[t * E + e]!);
    margin.push({ t, m: probs[t * E]! - best });
  }
  margin.sort((a, b) => a.m - b.m);
  const leave = new Set(margin.slice(0, load0 - cap).map((x) => x.t));
  for (let t = 0; t < T; t++) {
    const had = plain.expert[t * K] === 0 || plain.expert[t * K + 1] === 0;
    const has = rr.expert[t * K] === 0 || rr.expert[t * K + 1] === 0;
    assert.equal(had && !has, leave.has(t), `token ${t}: ${had ? 'had' : 'did not have'} expert 0, ${has ? 'keeps' : 'lost'} it`);
  }
  assert.equal(rr.counts[0], cap);
  assert.equal(rr.moved, load0 - cap);
  // the offsets: only the overloaded expert moves, and down
  const off = fitCapacityOffsets(probs, 0, T, E, K, null, cap);
  assert.ok(off[0]! < 0);
  for (let e = 1; e < E; e++) assert.equal(off[e], 0);
});

test('reroute: the same tokens go to the same experts whichever way the batch is split over ranks', () => {
  const G = 8, T = 32, E = 8, K = 2;
  const probs = probsOf(9, G * T, E, [1.5, 1.0, 0.5]);
  const o: RouteOptions = { groups: G, groupSize: T, experts: E, topK: K, capacityFactor: 1.0, swipe: false, bias: null, reroute: true };
  const whole = routeTokens(probs, o);
  assert.ok(whole.moved > 0);
  const parts = [0, 3, 5, 8].slice(1).map((hi, i, a) => {
    const lo = i === 0 ? 0 : a[i - 1]!;
    return routeTokens(probs.subarray(lo * T * E, hi * T * E), { ...o, groups: hi - lo });
  });
  assert.deepEqual(parts.flatMap((r) => Array.from(r.expert)), Array.from(whole.expert));
  assert.deepEqual(parts.flatMap((r) => Array.from(r.slot, (s) => s >= 0)), Array.from(whole.slot, (s) => s >= 0));
  assert.equal(parts.reduce((a, r) => a + r.moved, 0), whole.moved);
  assert.equal(parts.reduce((a, r) => a + r.dropped, 0), whole.dropped);
});

test('reroute leaves routing alone where nothing overflows, and with dropless routing', () => {
  const G = 2, T = 64, E = 8, K = 2;
  const probs = probsOf(2, G * T, E, []);
  const o: RouteOptions = { groups: G, groupSize: T, experts: E, topK: K, capacityFactor: 4, swipe: false, bias: null };
  const a = routeTokens(probs, o), b = routeTokens(probs, { ...o, reroute: true });
  assert.deepEqual(Array.from(b.expert), Array.from(a.expert));
  assert.equal(b.moved, 0);
  const d = routeTokens(probs, { ...o, capacityFactor: 0, reroute: true });
  assert.deepEqual(Array.from(d.expert), Array.from(routeTokens(probs, { ...o, capacityFactor: 0 }).expert));
});

test('model.moe.overflow is validated, naming the field', () => {
  const cfg = (args: string[]) => configFromArgs(parseArgs(['--preset', 'moe-tiny', ...args]).flags);
  assert.throws(() => validateTrainConfig(cfg(['--model.moe.overflow=spill'])), /model\.moe\.overflow must be one of drop, reroute, got 'spill'/);
  assert.throws(() => validateTrainConfig(cfg(['--model.moe.overflow=reroute'])), /model\.moe\.overflow = reroute .*set model\.moe\.capacityFactor > 0/);
  const ok = cfg(['--model.moe.overflow=reroute', '--model.moe.capacityFactor=1.25', '--model.moe.balance=bias']);
  validateTrainConfig(ok);
  assert.equal(ok.model.moe!.overflow, 'reroute');
  assert.equal(cfg([]).model.moe!.overflow, 'drop');
});
