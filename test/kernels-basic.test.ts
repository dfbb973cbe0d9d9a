// Backend conformance: every native kernel of native/basic.c against its TypeScript
// reference on random shapes, non-contiguous views (transposed, sliced), broadcasting
// and sizes that are not multiples of the vector width; then the public ops on the
// reference path (in-process and with ATHANOR_BACKEND=reference in a child process).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { nativeBasic } from '../src/backend/native-basic.js';
import * as K from '../src/backend/basic-kernels.js';
import * as R from '../src/backend/reference/basic.js';
import { BIN, UN, type View } from '../src/backend/basic-kernels.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/core/dtype.js';
import { broadcastStrides, contiguousStrides, numel } from '../src/core/layout.js';
import { Rng } from '../src/core/rng.js';
import { fromStorage, tensor, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import * as op from '../src/ops/index.js';
import { backward } from '../src/autograd/tape.js';

const lib = nativeBasic();
const skip = skipUnless(lib !== null, 'native kernel library (run `npm install`)');
setNativeMinElements(0);

const rng = new Rng(42);
const SIZES = [1, 7, 33, 1000];

type Layout = 'contiguous' | 'transposed' | 'sliced';
const LAYOUTS: Layout[] = ['contiguous', 'transposed', 'sliced'];

/** A float32 view of `shape` with the given memory layout, filled with f(normal). */
function view(shape: number[], layout: Layout, f: (v: number) => number = (v) => v): View & { data: Float32Array } {
  const nd = shape.length;
  if (layout === 'transposed' && nd >= 2) {
    const st = [...shape];
    [st[nd - 1], st[nd - 2]] = [st[nd - 2]!, st[nd - 1]!];
    const data = new Float32Array(numel(st));
    for (let i = 0; i < data.length; i++) data[i] = f(rng.normal());
    const s = contiguousStrides(st);
    [s[nd - 1], s[nd - 2]] = [s[nd - 2]!, s[nd - 1]!];
    return { data, offset: 0, shape, strides: s };
  }
  if (layout === 'sliced' && nd >= 1) {
    const big = [...shape];
    big[nd - 1] = shape[nd - 1]! * 2 + 1;
    const data = new Float32Array(numel(big) + 3);
    for (let i = 0; i < data.length; i++) data[i] = f(rng.normal());
    const s = contiguousStrides(big);
    s[nd - 1] = 2;
    return { data, offset: 3, shape, strides: s };
  }
  const data = new Float32Array(numel(shape));
  for (let i = 0; i < data.length; i++) data[i] = f(rng.normal());
  return { data, offset: 0, shape, strides: contiguousStrides(shape) };
}

function contigOut(shape: readonly number[]): View & { data: Float32Array } {
  return { data: new Float32Array(numel(shape)), offset: 0, shape, strides: contiguousStrides(shape) };
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (a === e) continue;
    const err = Math.abs(a - e);
    assert.ok(err <= atol + rtol * Math.abs(e), `${what}: element ${i}: ${a} vs ${e} (err ${err.toExponential(2)})`);
  }
}

/** Shapes with n elements: 1-d, 2-d and 3-d splits. */
function shapesFor(n: number): number[][] {
  const out = [[n]];
  for (const d of [2, 3, 5, 7, 11]) if (n % d === 0 && n / d > 1) { out.push([d, n / d]); break; }
  if (n === 1000) out.push([10, 4, 25]);
  return out;
}

test('binary: every op, layout and broadcast matches the reference', { skip }, () => {
  const ops = [BIN.add, BIN.sub, BIN.mul, BIN.div];
  for (const n of SIZES) {
    for (const shape of shapesFor(n)) {
      const bshapes = [shape, shape.map((d, i) => (i === 0 ? 1 : d)), shape.slice(1), [1]];
      for (const la of LAYOUTS) for (const lb of LAYOUTS) for (const bs of bshapes) for (const o of ops) {
        const a = view(shape, la), b = view(bs.length ? bs : [1], lb, (v) => (o === BIN.div ? v + Math.sign(v) + 0.1 : v));
        const out = contigOut(shape);
        K.binaryInto(o, out, a, b);
        const exp = new Float32Array(out.data.length);
        R.binaryRef(o, shape, [contiguousStrides(shape), a.strides, broadcastStrides(b.shape, b.strides, shape)], exp, 0, a.data, a.offset, b.data, b.offset);
        close(out.data, exp, 0, 0, `binary ${o} ${JSON.stringify(shape)} ${la}/${lb} b=${JSON.stringify(bs)}`);
      }
    }
  }
  // In place (out aliases a) and a strided output (accumulating into a slice).
  const a = view([33, 7], 'contiguous'), b = view([7], 'contiguous');
  const exp = new Float32Array(a.data.length);
  R.binaryRef(BIN.add, [33, 7], [contiguousStrides([33, 7]), a.strides, [0, 1]], exp, 0, a.data, 0, b.data, 0);
  K.binaryInto(BIN.add, a, a, b);
  close(a.data, exp, 0, 0, 'in-place add');
  const big = new Float32Array(40 * 10), region: View = { data: big, offset: 2, shape: [40, 7], strides: [10, 1] };
  const g = view([40, 7], 'transposed');
  K.binaryInto(BIN.add, region, region, g);
  const expBig = new Float32Array(big.length);
  R.binaryRef(BIN.add, [40, 7], [[10, 1], [10, 1], g.strides], expBig, 2, new Float32Array(big.length), 2, g.data, 0);
  close(big, expBig, 0, 0, 'add into strided region');
});

const UNARY: [keyof typeof UN, number, ((v: number) => number)?][] = [
  ['neg', 0], ['exp', 0, (v) => 20 * v], ['log', 0, (v) => Math.abs(v) * 10 + 1e-3], ['sqrt', 0, Math.abs], ['rsqrt', 0, (v) => Math.abs(v) + 1e-3],
  ['pow', 3], ['pow', 2], ['pow', 0.5, Math.abs], ['pow', -1.3, (v) => Math.abs(v) + 0.1], ['tanh', 0, (v) => 5 * v], ['sigmoid', 0, (v) => 10 * v],
  ['relu', 0], ['gelu', 0, (v) => 4 * v], ['silu', 0, (v) => 8 * v], ['scale', -0.37],
];

test('unary forward and fused backward (overwrite and accumulate) match the reference', { skip }, () => {
  for (const n of SIZES) {
    for (const [name, p, f] of UNARY) {
      const code = UN[name];
      const x = view([n], 'contiguous', f);
      const y = new Float32Array(n), ye = new Float32Array(n);
      K.unaryContig(code, n, x.data, 0, y, 0, p);
      R.unaryRef(code, n, x.data, 0, ye, 0, p);
      close(y, ye, 3e-6, name === 'exp' ? 1e-37 : 1e-7, `${name}(${p}) forward n=${n}`);
      const dy = view([n], 'contiguous').data;
      const dx = view([n], 'contiguous').data, dxe = Float32Array.from(dx);
      const useY = name === 'exp' || name === 'sqrt' || name === 'rsqrt' || name === 'tanh' || name === 'sigmoid';
      const src = useY ? ye : x.data;
      for (const acc of [false, true]) {
        K.unaryBackwardContig(code, n, src, 0, src, 0, dy, 0, dx, 0, p, acc);
        R.unaryBwdRef(code, n, src, 0, src, 0, dy, 0, dxe, 0, p, acc);
        close(dx, dxe, 1e-5, 1e-6, `${name}(${p}) backward acc=${acc} n=${n}`);
      }
    }
  }
  // Special values go through the fast exp/tanh paths consistently with the reference.
  const sp = Float32Array.from([NaN, Infinity, -Infinity, 0, -0, 88.7, 88.8, -87.5, -103, -150, 1e-8, -1e-8, 0.6249, 0.6251, 9, -9]);
  for (const name of ['exp', 'tanh', 'sigmoid', 'gelu', 'silu'] as const) {
    const y = new Float32Array(sp.length), ye = new Float32Array(sp.length);
    K.unaryContig(UN[name], sp.length, sp, 0, y, 0, 0);
    R.unaryRef(UN[name], sp.length, sp, 0, ye, 0, 0);
    close(y, ye, 3e-6, name === 'exp' ? 1e-37 : 1e-7, `${name} special values`);
  }
});

test('strided copy for 2-, 4- and 8-byte elements, with broadcasting sources', { skip }, () => {
  for (const n of SIZES) {
    for (const shape of shapesFor(n)) for (const l of LAYOUTS) {
      const src = view(shape, l);
      const out = contigOut(shape);
      K.copyStrided(out, src);
      const exp = new Float32Array(out.data.length);
      R.copyStridedRef(shape, [contiguousStrides(shape), src.strides], exp, 0, src.data, src.offset);
      close(out.data, exp, 0, 0, `copy f32 ${JSON.stringify(shape)} ${l}`);
      // Into a transposed destination.
      if (shape.length === 2) {
        const dst: View = { data: new Float32Array(n), offset: 0, shape, strides: [1, shape[0]!] };
        K.copyStrided(dst, src);
        const e2 = new Float32Array(n);
        R.copyStridedRef(shape, [[1, shape[0]!], src.strides], e2, 0, src.data, src.offset);
        close(dst.data, e2, 0, 0, 'copy into transposed dst');
      }
      for (const [Ctor, size] of [[Uint16Array, 2], [Int32Array, 4], [Float64Array, 8]] as const) {
        const data = new Ctor(src.data.length);
        for (let i = 0; i < data.length; i++) data[i] = (i * 7919) % 65521;
        const o = new Ctor(n), e = new Ctor(n);
        const nd = src.shape.length;
        lib!.meta.set([...shape, ...contiguousStrides(shape), ...src.strides]);
        lib!.copyStrided(size, nd, lib!.meta, o, 0, data, src.offset);
        R.copyStridedRef(shape, [contiguousStrides(shape), src.strides], e, 0, data, src.offset);
        assert.deepEqual(Array.from(o), Array.from(e), `copy ${size}-byte ${JSON.stringify(shape)} ${l}`);
      }
    }
  }
  const b = view([7], 'sliced'), out = contigOut([5, 7]);
  K.copyStrided(out, b);
  for (let r = 0; r < 5; r++) for (let j = 0; j < 7; j++) assert.equal(out.data[r * 7 + j], b.data[3 + 2 * j]);
});

test('sum over every axis subset matches the reference (float64 accumulation)', { skip }, () => {
  const shapes = [[1], [7], [33], [1000], [100000], [3, 7], [33, 5], [10, 4, 25], [2, 3, 4, 5], [300, 200]];
  for (const shape of shapes) for (const l of LAYOUTS) {
    const x = view(shape, l);
    const nd = shape.length;
    for (let mask = 1; mask < 1 << nd; mask++) {
      const reduced = shape.map((_, i) => (mask & (1 << i)) !== 0);
      const kept = shape.map((d, i) => (reduced[i] ? 1 : d));
      const outN = numel(kept);
      const out = new Float32Array(outN), exp = new Float32Array(outN);
      K.sumInto(out, 0, x, reduced, 0.5);
      const os = contiguousStrides(kept).map((s, i) => (reduced[i] ? 0 : s));
      R.sumRef(shape, [x.strides, os], x.data, x.offset, exp, 0, outN, 0.5);
      close(out, exp, 1e-6, 1e-6, `sum ${JSON.stringify(shape)} ${l} mask=${mask}`);
    }
  }
});

test('max / argmax along each axis (first occurrence, NaN wins) match the reference', { skip }, () => {
  for (const shape of [[1], [7], [33, 5], [10, 4, 25], [3, 1000]]) {
    const x = view(shape, 'contiguous', (v) => Math.round(v * 2) / 2); // ties on purpose
    if (x.data.length > 20) x.data[17] = NaN;
    for (let axis = 0; axis < shape.length; axis++) {
      const m = numel(shape) / shape[axis]!;
      const v = new Float32Array(m), i = new Int32Array(m), ve = new Float32Array(m), ie = new Int32Array(m);
      K.maxAlong(x, axis, v, i);
      let outer = 1, inner = 1;
      for (let d = 0; d < axis; d++) outer *= shape[d]!;
      for (let d = axis + 1; d < shape.length; d++) inner *= shape[d]!;
      R.maxRef(outer, shape[axis]!, inner, x.data, 0, ve, 0, ie, 0);
      close(v, ve, 0, 0, `max ${JSON.stringify(shape)} axis ${axis}`);
      assert.deepEqual(Array.from(i), Array.from(ie), `argmax ${JSON.stringify(shape)} axis ${axis}`);
    }
  }
});

test('gather and scatter-add along each axis match the reference', { skip }, () => {
  for (const shape of [[7], [33, 5], [10, 4, 25]]) for (const l of LAYOUTS) {
    const x = view(shape, l);
    for (let axis = 0; axis < shape.length; axis++) {
      const ishape = shape.map((d, i) => (i === axis ? d + 3 : Math.max(1, d - 1)));
      const idx = new Int32Array(numel(ishape));
      for (let k = 0; k < idx.length; k++) idx[k] = rng.int(shape[axis]!);
      const iv: View = { data: idx, offset: 0, shape: ishape, strides: contiguousStrides(ishape) };
      const out = contigOut(ishape), exp = new Float32Array(idx.length);
      K.gatherInto(out, x, iv, axis);
      const xs = [...x.strides];
      xs[axis] = 0;
      R.gatherRef(ishape, [contiguousStrides(ishape), xs, iv.strides], exp, 0, x.data, x.offset, idx, 0, x.strides[axis]!, shape[axis]!);
      close(out.data, exp, 0, 0, `gather ${JSON.stringify(shape)} ${l} axis ${axis}`);
      const dx = contigOut(shape), dxe = new Float32Array(dx.data.length);
      const g = view(ishape, 'contiguous');
      K.scatterAddInto(dx, g, iv, axis);
      const ds = contiguousStrides(shape);
      const dstr = [...ds];
      dstr[axis] = 0;
      R.scatterAddRef(ishape, [dstr, g.strides, iv.strides], dxe, 0, g.data, 0, idx, 0, ds[axis]!, shape[axis]!);
      close(dx.data, dxe, 1e-6, 1e-6, `scatterAdd ${JSON.stringify(shape)} axis ${axis}`);
    }
  }
  const x = view([4, 3], 'contiguous');
  const bad: View = { data: Int32Array.from([0, 5, 1]), offset: 0, shape: [1, 3], strides: [3, 1] };
  assert.throws(() => K.gatherInto(contigOut([1, 3]), x, bad, 0), /1 index value\(s\) out of range \[0, 4\) along axis 0/);
});

test('where with int32 and float32 conditions and broadcasting matches the reference', { skip }, () => {
  for (const n of SIZES) for (const shape of shapesFor(n)) for (const l of LAYOUTS) {
    const a = view(shape, l), b = view(shape.slice(1).length ? shape.slice(1) : [1], 'contiguous');
    const cshape = shape.map((d, i) => (i === shape.length - 1 ? d : 1));
    const ci = new Int32Array(numel(cshape)), cf = new Float32Array(ci.length);
    for (let k = 0; k < ci.length; k++) { ci[k] = rng.int(2) * (k % 3 === 0 ? -5 : 1); cf[k] = ci[k]!; }
    for (const c of [ci, cf]) {
      const cv: View = { data: c, offset: 0, shape: cshape, strides: contiguousStrides(cshape) };
      const out = contigOut(shape), exp = new Float32Array(out.data.length);
      K.whereInto(out, cv, a, b);
      R.whereRef(shape, [contiguousStrides(shape), broadcastStrides(cshape, cv.strides, shape), a.strides, broadcastStrides(b.shape, b.strides, shape)],
        exp, 0, c, 0, a.data, a.offset, b.data, b.offset);
      close(out.data, exp, 0, 0, `where ${c.constructor.name} ${JSON.stringify(shape)} ${l}`);
    }
  }
});

function specialFloats(): Float32Array {
  const u = new Uint32Array([
    0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x7fbfffff, // zeros, infs, NaNs
    0x00000001, 0x807fffff, 0x00400000, // f32 subnormals
    0x33800000, 0x33000000, 0x33000001, 0x337fffff, 0x38800000, 0x387fe000, 0x387ff000, 0x387fc000, // f16 subnormal range and edges
    0x477fe000, 0x477fefff, 0x477ff000, 0x47800000, 0x7f7fffff, // f16 max and overflow
    0x3f808000, 0x3f818000, 0x3f807fff, 0x3f800001, 0x3f801000, 0x3f803000, // bf16/f16 ties and near-ties
  ]);
  const out = new Float32Array(u.buffer);
  return out;
}

test('casts f32 <-> bf16 / f16 are bit-exact with dtype.ts (NaN, Inf, subnormals, ties, random bits)', { skip }, () => {
  const bits = new Uint32Array(200003);
  for (let i = 0; i < bits.length; i++) bits[i] = rng.nextU32();
  const rand = new Float32Array(bits.buffer);
  const normals = view([100001], 'contiguous', (v) => v * 1000).data;
  for (const x of [specialFloats(), rand, normals, rand.subarray(0, 7), rand.subarray(0, 33)]) {
    const n = x.length;
    const h = new Uint16Array(n);
    K.castContig(n, 'float32', x, 0, 'bfloat16', h, 0);
    for (let i = 0; i < n; i++) assert.equal(h[i], f32ToBf16(x[i]!), `bf16 of bits 0x${new Uint32Array(x.buffer, x.byteOffset)[i]!.toString(16)}`);
    K.castContig(n, 'float32', x, 0, 'float16', h, 0);
    for (let i = 0; i < n; i++) assert.equal(h[i], f32ToF16(x[i]!), `f16 of bits 0x${new Uint32Array(x.buffer, x.byteOffset)[i]!.toString(16)}`);
  }
  const all = new Uint16Array(65536);
  for (let i = 0; i < all.length; i++) all[i] = i;
  const f = new Float32Array(65536);
  K.castContig(65536, 'bfloat16', all, 0, 'float32', f, 0);
  for (let i = 0; i < 65536; i++) assert.ok(Object.is(f[i], Math.fround(bf16ToF32(i))) || (Number.isNaN(f[i]) && Number.isNaN(bf16ToF32(i))), `bf16 0x${i.toString(16)}`);
  K.castContig(65536, 'float16', all, 0, 'float32', f, 0);
  for (let i = 0; i < 65536; i++) assert.ok(Object.is(f[i], Math.fround(f16ToF32(i))) || (Number.isNaN(f[i]) && Number.isNaN(f16ToF32(i))), `f16 0x${i.toString(16)}`);
  // Offsets and the f64 paths.
  const x = normals.subarray(0, 1000);
  const d = new Float64Array(1003), back = new Float32Array(1001);
  K.castContig(997, 'float32', x, 3, 'float64', d, 6);
  for (let i = 0; i < 997; i++) assert.equal(d[6 + i], x[3 + i]);
  K.castContig(997, 'float64', d, 6, 'float32', back, 4);
  for (let i = 0; i < 997; i++) assert.equal(back[4 + i], x[3 + i]);
});

// ---- the public ops: native (threshold 0) against the reference path ----

function runOps(): Record<string, number[]> {
  return scope(() => {
    const r = new Rng(7);
    const t = (shape: number[]) => op.randn(shape, r, 'float32');
    const a = t([33, 31]), b = t([31]), c = t([31, 33]);
    const ct = op.transpose(c, 0, 1);
    const out: Record<string, Tensor> = {
      add: op.add(a, b), subT: op.sub(a, ct), mul: op.mul(ct, 3), div: op.div(a, op.add(op.relu(b), 1)),
      gelu: op.gelu(ct), silu: op.silu(a), tanh: op.tanh(a), exp: op.exp(ct), sigmoid: op.sigmoid(a),
      sum: op.sum(ct, 0), mean: op.mean(a, [0, 1]), max: op.max(ct, 1), argmax: op.cast(op.argmax(a, 0), 'float32'),
      contig: op.contiguous(ct), cat: op.concat([a, ct], 1), reshaped: op.reshape(ct, [-1]),
      gather: op.gather(a, tensor(Array.from({ length: 62 }, (_, i) => (i * 7) % 33), [2, 31], 'int32'), 0),
      where: op.where(op.relu(b), a, 0), bf16: op.cast(op.cast(a, 'bfloat16'), 'float32'), f16: op.cast(op.cast(ct, 'float16'), 'float32'),
    };
    // Backward through a graph using every rule (float32: fused kernels, native sumToShape).
    const w = op.randn([31], r);
    w.requiresGrad = true;
    const x = op.randn([33, 31], r);
    x.requiresGrad = true;
    const xt = op.transpose(op.contiguous(op.transpose(x, 0, 1)), 0, 1);
    const h = op.gelu(op.mul(op.add(x, w), op.sigmoid(xt)));
    const pos = op.add(op.mul(x, x), 0.5);
    const terms = [
      op.mean(h), op.sum(op.silu(op.sub(x, w)), 1), op.sum(op.tanh(op.div(x, op.add(op.relu(w), 1)))),
      op.sum(op.log(pos)), op.sum(op.sqrt(pos)), op.sum(op.rsqrt(pos)), op.sum(op.pow(x, 3)), op.sum(op.exp(op.scale(x, 0.1))),
      op.sum(op.max(op.relu(x), 1)), op.sum(op.neg(op.slice(x, 1, 3, 20))), op.sum(op.concat([x, op.expand(w, [2, 31])], 0)),
      op.sum(op.gather(x, tensor(Array.from({ length: 62 }, (_, i) => (i * 5) % 33), [2, 31], 'int32'), 0)),
      op.sum(op.where(op.relu(w), x, op.mul(x, 2))), op.sum(op.cast(op.cast(op.reshape(x, [-1]), 'float64'), 'float32')),
      op.sum(op.permute(op.reshape(x, [3, 11, 31]), [2, 0, 1])),
    ];
    const loss = terms.reduce((acc, t) => op.add(acc, op.sum(t)));
    backward(loss);
    out.gradX = x.grad!;
    out.gradW = w.grad!;
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(op.toFloat32Array(v))]));
  });
}

test('public ops: native and reference paths agree in-process', { skip }, () => {
  setNativeMinElements(0);
  const nat = runOps();
  setNativeMinElements(Number.POSITIVE_INFINITY);
  const ref = runOps();
  setNativeMinElements(0);
  for (const k of Object.keys(nat)) close(nat[k]!, ref[k]!, 2e-6, k.startsWith('grad') ? 2e-5 : 1e-6, `op ${k}`);
  assert.ok(nat.gradX && nat.gradW);
});

// The no-compiler fallback: a child process with ATHANOR_BACKEND=reference (runs everywhere),
// then the same program with the native library, which must agree with it.
const childRuns = (() => {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const code = `
    const op = await import(${JSON.stringify(new URL('../src/ops/index.js', import.meta.url).href)});
    const { nativeKernels } = await import(${JSON.stringify(new URL('../src/backend/native.js', import.meta.url).href)});
    const { backward } = await import(${JSON.stringify(new URL('../src/autograd/tape.js', import.meta.url).href)});
    const { Rng } = await import(${JSON.stringify(new URL('../src/core/rng.js', import.meta.url).href)});
    const r = new Rng(3);
    const x = op.randn([64, 48], r); x.requiresGrad = true;
    const b = op.randn([48], r); b.requiresGrad = true;
    const y = op.sum(op.gelu(op.add(op.transpose(op.contiguous(op.transpose(x, 0, 1)), 0, 1), b)));
    backward(y);
    const h = op.cast(op.cast(x, 'bfloat16'), 'float32');
    console.log(JSON.stringify({ native: nativeKernels() !== null, y: y.item(), gb: Array.from(b.grad.data.slice(0, 4)), h: Array.from(op.toFloat32Array(h).slice(0, 4)) }));
  `;
  const run = (env: Record<string, string>) => JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: here, env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_NATIVE_MIN: '0', ...env }, encoding: 'utf8',
  }));
  let ref: { native: boolean; y: number; gb: number[]; h: number[] } | undefined;
  return { ref: () => (ref ??= run({ ATHANOR_BACKEND: 'reference' })), native: () => run({}) };
})();

test('ATHANOR_BACKEND=reference: ops and backward run without the native library', () => {
  const refRun = childRuns.ref();
  assert.equal(refRun.native, false);
  assert.ok(Number.isFinite(refRun.y) && refRun.gb.length === 4 && refRun.gb.every(Number.isFinite), JSON.stringify(refRun));
});

test('the same program with the native library agrees with ATHANOR_BACKEND=reference', { skip }, () => {
  const refRun = childRuns.ref();
  const natRun = childRuns.native();
  assert.equal(natRun.native, true);
  close([refRun.y], [natRun.y], 1e-5, 1e-4, 'loss');
  close(refRun.gb, natRun.gb, 1e-5, 1e-5, 'bias grad');
  close(refRun.h, natRun.h, 0, 0, 'bf16 round trip');
});

test('float64 tensors stay on the reference path and agree with float32 natives', { skip }, () => {
  const x64 = fromStorage(Float64Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3), [40, 25], 'float64');
  const x32 = op.cast(x64, 'float32');
  const g64 = op.toFloat32Array(op.gelu(op.transpose(x64, 0, 1)));
  const g32 = op.toFloat32Array(op.gelu(op.transpose(x32, 0, 1)));
  close(g32, g64, 3e-6, 1e-6, 'gelu f32 vs f64');
});
