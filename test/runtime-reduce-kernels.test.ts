// The native reduction loops (native/comm.c) must match the TypeScript fallback bit for bit,
// including infinities, subnormals and bf16 rounding ties. NaNs must stay NaNs; their payload
// is not compared (which operand's payload an add propagates differs between V8's JIT tiers
// and compilers alike).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireNative } from './helpers/require-native.js';
import { Accumulator, combine, divideInPlace, useNativeReduce } from '../src/runtime/reduce-kernels.js';
import type { CommBuffer, CommDType, ReduceOp } from '../src/runtime/communicator.js';

function rand(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

/** Random bit patterns weighted towards ordinary values, with specials mixed in. */
function fill(dtype: CommDType, n: number, seed: number): CommBuffer {
  const r = rand(seed);
  const f = new Float32Array(n);
  const specials = [NaN, Infinity, -Infinity, 0, -0, 1e-40, -3e-39, 3.4e38, -3.4e38, 1 + 2 ** -8, 1 + 3 * 2 ** -9];
  for (let i = 0; i < n; i++) {
    const u = r();
    f[i] = u < 0.05 ? specials[Math.floor(r() * specials.length)]! : (r() - 0.5) * 2 ** Math.floor(r() * 40 - 20);
  }
  if (dtype === 'float32') return f;
  const h = new Uint16Array(n), u32 = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) h[i] = (u32[i]! >>> 16) ^ (r() < 0.5 ? 1 : 0);
  return h;
}

/** Bit patterns with every NaN replaced by one canonical NaN. */
function bits(b: CommBuffer): number[] {
  if (b instanceof Float32Array) {
    const u = new Uint32Array(b.buffer, b.byteOffset, b.length);
    return Array.from(u, (x) => ((x & 0x7fffffff) > 0x7f800000 ? 0x7fc00000 : x));
  }
  return Array.from(b as Uint16Array, (x) => ((x & 0x7fff) > 0x7f80 ? 0x7fc0 : x));
}
const clone = (b: CommBuffer): CommBuffer => b.slice();

function bothPaths(f: () => CommBuffer): [CommBuffer, CommBuffer] {
  try {
    const hasNative = useNativeReduce(true);
    const nat = f();
    useNativeReduce(false);
    const ts = f();
    // Without the library there is nothing to compare: fine locally, a failure in CI.
    if (!requireNative(hasNative ? true : null, 'native reduce kernels (native/comm.c)')) return [ts, ts];
    return [nat, ts];
  } finally { useNativeReduce(true); }
}

test('native reduce kernels match the TypeScript loops bit for bit', () => {
  const n = 10007; // above the native threshold, odd to exercise loop tails
  for (const dtype of ['float32', 'bfloat16'] as CommDType[]) {
    const a = fill(dtype, n, 1), b = fill(dtype, n, 2);
    for (const op of ['sum', 'avg', 'max'] as ReduceOp[]) {
      for (const divisor of op === 'avg' ? [1, 3, 7] : [1]) {
        const [x, y] = bothPaths(() => { const o = clone(a); combine(dtype, op, o, o, b, divisor); return o; });
        assert.deepEqual(bits(x), bits(y), `combine ${dtype} ${op} /${divisor}`);
      }
      const [x, y] = bothPaths(() => {
        const acc = new Accumulator(dtype, op, n);
        acc.add(a); acc.add(b); acc.add(fill(dtype, n, 3));
        const o = clone(a); acc.finish(o, 3); return o;
      });
      assert.deepEqual(bits(x), bits(y), `accumulator ${dtype} ${op}`);
    }
    const [x, y] = bothPaths(() => { const o = clone(a); divideInPlace(dtype, o, 5); return o; });
    assert.deepEqual(bits(x), bits(y), `divide ${dtype}`);
  }
});
