// Mixture-of-experts ops: token permutation (dispatch), the grouped expert GEMM and the
// weighted un-permutation (combine), plus the tape node of an all-to-all exchange.
//
// Tokens routed to experts are laid out as one (S, C) buffer whose rows are grouped by
// expert (counts[e] consecutive rows each), so every expert runs ONE GEMM over its
// contiguous block (`groupedMatmul`), never per-token work. `moeDispatch` builds that
// buffer with the embedding row-gather kernel (backward: its scatter-add kernel);
// `moeCombine` sums each token's K expert outputs weighted by its gates (native/moe.c).
import { empty, type Tensor } from '../core/tensor.js';
import { shapeStr } from '../core/layout.js';
import { record } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { gemm } from '../backend/blas.js';
import * as NK from '../backend/nn-kernels.js';
import { dense, floatData, gradTarget, type F } from '../backend/nn-kernels.js';
import { moeCombineBwd, moeCombineFwd } from '../backend/moe-kernels.js';
import { accumulateGrad as accumulate } from '../autograd/accumulate.js';

function checkFloat2(t: Tensor, where: string, what: string): void {
  if (t.dtype !== 'float32' && t.dtype !== 'float64') throw new Error(`${where}: ${what} must be float32 or float64, got ${t.dtype}`);
  if (t.ndim !== 2) throw new Error(`${where}: ${what} must be 2-D, got ${shapeStr(t.shape)}`);
}

// ------------------------------------------------------------------ dispatch

/**
 * Rows of x (N, C) in the order `src` (S indices into [0, N)) → (rows, C), rows ≥ S (default
 * S): the rows past S are zero padding. A caller whose S changes from step to step (dropped
 * assignments) passes a fixed `rows` so the buffer, its gradient and everything sized by it
 * keep one size and the buffer pool reuses them.
 */
export function moeDispatch(x: Tensor, src: Int32Array, rows = src.length): Tensor {
  checkFloat2(x, 'moeDispatch', 'x');
  const [N, C] = x.shape as [number, number];
  if (!Number.isInteger(rows) || rows < src.length) throw new Error(`moeDispatch: rows (${rows}) must be an integer >= the ${src.length} dispatched rows`);
  for (let i = 0; i < src.length; i++) {
    const v = src[i]!;
    if (v < 0 || v >= N) throw new Error(`moeDispatch: source row ${v} at slot ${i} is out of range for ${N} tokens`);
  }
  const xd = dense(x);
  const out = empty([rows, C], x.dtype);
  NK.embeddingFwd(floatData(xd), C, src, out.data as F, src.length, C);
  if (rows > src.length) (out.data as F).fill(0, src.length * C, rows * C);
  if (xd !== x) xd.dispose();
  return record('moeDispatch', {}, [x], out, [], src);
}

export function moeDispatchBackward(node: Node<'moeDispatch'>, gOut: Tensor): void {
  const x = node.inputs[0]!;
  if (!x.requiresGrad) return;
  const src = node.ctx as Int32Array;
  const C = x.shape[1]!;
  const g = dense(gOut);
  if (x.isContiguous() && x.offset === 0) {
    const { g: dx } = gradTarget(x, false);
    NK.embeddingBwd(floatData(g), src, dx.data as F, src.length, C);
  } else {
    const dx = empty(x.shape, x.dtype);
    (dx.data as F).fill(0);
    NK.embeddingBwd(floatData(g), src, dx.data as F, src.length, C);
    accumulate(x, dx, true);
  }
  if (g !== gOut) g.dispose();
}

// ------------------------------------------------------------------- combine

/**
 * out[t] = Σ_k gate[t,k] · y[slot[t·K+k]] for y (S, C), gate (N, K); slot −1 marks a
 * dropped assignment (no output, no gradient to its gate). Every slot in [0, S) must be
 * referenced at most once.
 */
export function moeCombine(y: Tensor, gate: Tensor, slot: Int32Array): Tensor {
  checkFloat2(y, 'moeCombine', 'y');
  checkFloat2(gate, 'moeCombine', 'gate');
  if (gate.dtype !== y.dtype) throw new Error(`moeCombine: gate dtype ${gate.dtype} differs from y dtype ${y.dtype}`);
  const [S, C] = y.shape as [number, number];
  const [N, K] = gate.shape as [number, number];
  if (slot.length !== N * K) throw new Error(`moeCombine: slot table has ${slot.length} entries, expected N·K = ${N}·${K}`);
  const seen = new Uint8Array(S);
  let used = 0;
  for (let i = 0; i < slot.length; i++) {
    const s = slot[i]!;
    if (s < 0) continue;
    if (s >= S) throw new Error(`moeCombine: slot ${s} at assignment ${i} is out of range for ${S} expert rows`);
    if (seen[s]) throw new Error(`moeCombine: expert row ${s} is referenced twice (assignment ${i})`);
    seen[s] = 1;
    used++;
  }
  const yd = dense(y), gd = dense(gate);
  const out = empty([N, C], y.dtype);
  moeCombineFwd(floatData(yd), floatData(gd), slot, out.data as F, N, K, C);
  if (yd !== y) yd.dispose();
  if (gd !== gate) gd.dispose();
  return record('moeCombine', {}, [y, gate], out, [], { slot, complete: used === S });
}

export function moeCombineBackward(node: Node<'moeCombine'>, gOut: Tensor): void {
  const [y, gate] = node.inputs as [Tensor, Tensor];
  const { slot, complete } = node.ctx as { slot: Int32Array; complete: boolean };
  const [S, C] = y.shape as [number, number];
  const [N, K] = gate.shape as [number, number];
  const g = dense(gOut), yd = dense(y), gd = dense(gate);
  let dy: Tensor | null = null, fresh = false, dyOwned = false;
  if (y.requiresGrad) {
    if (y.isContiguous() && y.offset === 0) ({ g: dy, fresh } = gradTarget(y, complete));
    else { dy = empty([S, C], y.dtype); (dy.data as F).fill(0); dyOwned = true; }
  }
  let dgate: Tensor | null = null, dgOwned = false;
  if (gate.requiresGrad) {
    if (gate.isContiguous() && gate.offset === 0) dgate = gradTarget(gate, false).g;
    else { dgate = empty([N, K], gate.dtype); (dgate.data as F).fill(0); dgOwned = true; }
  }
  moeCombineBwd(floatData(g), floatData(yd), floatData(gd), slot, dy ? (dy.data as F) : null, dgate ? (dgate.data as F) : null, N, K, C, !fresh);
  if (dyOwned) accumulate(y, dy!, true);
  if (dgOwned) accumulate(gate, dgate!, true);
  if (g !== gOut) g.dispose();
  if (yd !== y) yd.dispose();
  if (gd !== gate) gd.dispose();
}

// ------------------------------------------------------------- grouped GEMM

/**
 * Grouped linear: rows [o_g, o_g + counts[g]) of x (S, Cin) go through group g's
 * weight w[g] (G, Cout, Cin) (PyTorch (out, in) layout) and bias b[g] (G, Cout):
 * out (S, Cout). One GEMM per group over a contiguous block. Σ counts may fall short of
 * S: the rows past the groups are padding (expert parallelism sizes its row buffers at a
 * capacity, parallel/expert-parallel-capacity.ts); their output is zero, they take no
 * GEMM work, and their input gradient is zero.
 */
export function groupedMatmul(x: Tensor, w: Tensor, bias: Tensor | null, counts: Int32Array): Tensor {
  checkFloat2(x, 'groupedMatmul', 'x');
  if (w.ndim !== 3) throw new Error(`groupedMatmul: weight must be (G, Cout, Cin), got ${shapeStr(w.shape)}`);
  const [S, Cin] = x.shape as [number, number];
  const [G, Cout, Cin2] = w.shape as [number, number, number];
  if (Cin2 !== Cin) throw new Error(`groupedMatmul: weight ${shapeStr(w.shape)} does not take inputs of width ${Cin} (x ${shapeStr(x.shape)})`);
  if (w.dtype !== x.dtype) throw new Error(`groupedMatmul: weight dtype ${w.dtype} differs from x dtype ${x.dtype}`);
  if (bias && (bias.ndim !== 2 || bias.shape[0] !== G || bias.shape[1] !== Cout)) throw new Error(`groupedMatmul: bias must be (${G}, ${Cout}), got ${shapeStr(bias.shape)}`);
  if (counts.length !== G) throw new Error(`groupedMatmul: ${counts.length} group counts for ${G} groups`);
  let total = 0;
  for (const c of counts) {
    if (c < 0) throw new Error(`groupedMatmul: negative group count ${c}`);
    total += c;
  }
  if (total > S) throw new Error(`groupedMatmul: group counts sum to ${total} but x has only ${S} rows`);
  const xd = dense(x), wd = dense(w), bd = bias ? dense(bias) : null;
  const out = empty([S, Cout], x.dtype);
  const X = floatData(xd), W = floatData(wd), O = out.data as F;
  if (total < S) O.fill(0, total * Cout, S * Cout);
  let o = 0;
  for (let g = 0; g < G; g++) {
    const n = counts[g]!;
    if (n === 0) continue;
    if (bd) NK.fillRows(O.subarray(o * Cout), floatData(bd).subarray(g * Cout, (g + 1) * Cout), n, Cout, Cout);
    gemm(false, true, n, Cout, Cin, 1, X, o * Cin, Cin, W, g * Cout * Cin, Cin, bd ? 1 : 0, O, o * Cout, Cout);
    o += n;
  }
  if (xd !== x) xd.dispose();
  if (wd !== w) wd.dispose();
  if (bd && bd !== bias) bd.dispose();
  return record('groupedMatmul', {}, bias ? [x, w, bias] : [x, w], out, [], counts.slice());
}

export function groupedMatmulBackward(node: Node<'groupedMatmul'>, gOut: Tensor): void {
  const [x, w, bias] = node.inputs as [Tensor, Tensor, Tensor | undefined];
  const counts = node.ctx as Int32Array;
  const [, Cin] = x.shape as [number, number];
  const [G, Cout] = w.shape as [number, number, number];
  const g = dense(gOut), xd = dense(x), wd = dense(w);
  const Gd = floatData(g), X = floatData(xd), W = floatData(wd);
  const direct = (t: Tensor) => t.isContiguous() && t.offset === 0;
  if (x.requiresGrad) {
    const own = !direct(x);
    const { g: dx, fresh } = own ? { g: empty(x.shape, x.dtype), fresh: true } : gradTarget(x, true);
    const D = dx.data as F;
    // Padding rows past the groups: zero gradient (a fresh buffer's contents are undefined).
    let total = 0;
    for (let e = 0; e < G; e++) total += counts[e]!;
    if (fresh && total < x.shape[0]!) D.fill(0, total * Cin, x.shape[0]! * Cin);
    let o = 0;
    for (let e = 0; e < G; e++) {
      const n = counts[e]!;
      if (n) gemm(false, false, n, Cin, Cout, 1, Gd, o * Cout, Cout, W, e * Cout * Cin, Cin, fresh ? 0 : 1, D, o * Cin, Cin);
      o += n;
    }
    if (own) accumulate(x, dx, true);
  }
  if (w.requiresGrad) {
    const own = !direct(w);
    const dw = own ? empty(w.shape, w.dtype) : gradTarget(w, false).g;
    if (own) (dw.data as F).fill(0);
    const D = dw.data as F;
    let o = 0;
    for (let e = 0; e < G; e++) {
      const n = counts[e]!;
      if (n) gemm(true, false, Cout, Cin, n, 1, Gd, o * Cout, Cout, X, o * Cin, Cin, 1, D, e * Cout * Cin, Cin);
      o += n;
    }
    if (own) accumulate(w, dw, true);
  }
  if (bias?.requiresGrad) {
    const own = !direct(bias);
    const db = own ? empty(bias.shape, bias.dtype) : gradTarget(bias, false).g;
    if (own) (db.data as F).fill(0);
    const D = db.data as F;
    let o = 0;
    for (let e = 0; e < G; e++) {
      const n = counts[e]!;
      if (n) NK.biasGrad(Gd.subarray(o * Cout), D.subarray(e * Cout, (e + 1) * Cout), n, Cout, Cout);
      o += n;
    }
    if (own) accumulate(bias, db, true);
  }
  if (g !== gOut) g.dispose();
  if (xd !== x) xd.dispose();
  if (wd !== w) wd.dispose();
}

// ------------------------------------------------------- all-to-all on the tape

/**
 * An exchange of rows between ranks and its adjoint (the same exchange with send and
 * receive counts swapped). Implemented by the parallel layer; the op only needs the
 * two functions, so models and autograd never import the runtime.
 */
export interface RowExchange {
  readonly group: string;
  /** Rows of x (S_send, C) to their owners → (S_recv, C). */
  forward(x: Tensor): Tensor;
  /** Gradient (S_recv, C) back to the senders → (S_send, C). */
  backward(g: Tensor): Tensor;
}

/** All-to-all-v of rows recorded on the tape; backward runs the adjoint exchange. */
export function allToAllV(x: Tensor, ex: RowExchange): Tensor {
  checkFloat2(x, 'allToAllV', 'x');
  const xd = dense(x);
  const out = ex.forward(xd);
  if (xd !== x) xd.dispose();
  return record('allToAllV', { group: ex.group }, [x], out, [], ex);
}

export function allToAllVBackward(node: Node<'allToAllV'>, gOut: Tensor): void {
  const x = node.inputs[0]!;
  if (!x.requiresGrad) return;
  const ex = node.ctx as RowExchange;
  const g = dense(gOut);
  const dx = ex.backward(g);
  if (g !== gOut) g.dispose();
  accumulate(x, dx, true);
}
