// Element-wise unary ops and dtype casts. Outputs are contiguous; a non-contiguous
// input is first copied into the output buffer and transformed there in place, so
// views cost one strided copy and no extra allocation.
import { allocStorage, type DType, type Storage } from '../core/dtype.js';
import { type Tensor, empty } from '../core/tensor.js';
import { contiguousStrides } from '../core/layout.js';
import { record } from '../autograd/tape.js';
import type { OpAttrs } from '../autograd/node.js';
import { UN, castContig, copyStrided, unaryContig, type CastDType, type UnCode } from '../backend/basic-kernels.js';
import type { FArr } from '../backend/reference/basic.js';
import { NO_ATTRS, assertFloat } from './elementwise.js';
import { geluBf16, geluPacks } from './gelu-lowp.js';

type UnaryName = 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'pow' | 'tanh' | 'sigmoid' | 'relu' | 'gelu' | 'silu' | 'scale';

function unary<K extends UnaryName>(op: UnCode, name: K, x: Tensor, p: number, attrs: OpAttrs[K]): Tensor {
  assertFloat(x, name);
  const out = empty(x.shape, x.dtype);
  const n = out.size;
  const y = out.data as FArr;
  if (x.isContiguous()) {
    unaryContig(op, n, x.data as FArr, x.offset, y, 0, p);
  } else {
    copyStrided(out, x);
    unaryContig(op, n, y, 0, y, 0, p);
  }
  return record(name, attrs, [x], out);
}

export function neg(x: Tensor): Tensor { return unary(UN.neg, 'neg', x, 0, NO_ATTRS); }
export function exp(x: Tensor): Tensor { return unary(UN.exp, 'exp', x, 0, NO_ATTRS); }
export function log(x: Tensor): Tensor { return unary(UN.log, 'log', x, 0, NO_ATTRS); }
export function sqrt(x: Tensor): Tensor { return unary(UN.sqrt, 'sqrt', x, 0, NO_ATTRS); }
export function rsqrt(x: Tensor): Tensor { return unary(UN.rsqrt, 'rsqrt', x, 0, NO_ATTRS); }
/** x ** exponent (a constant). */
export function pow(x: Tensor, exponent: number): Tensor { return unary(UN.pow, 'pow', x, exponent, { exponent }); }
export function tanh(x: Tensor): Tensor { return unary(UN.tanh, 'tanh', x, 0, NO_ATTRS); }
export function sigmoid(x: Tensor): Tensor { return unary(UN.sigmoid, 'sigmoid', x, 0, NO_ATTRS); }
export function relu(x: Tensor): Tensor { return unary(UN.relu, 'relu', x, 0, NO_ATTRS); }
/** GELU, tanh form: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))) (GPT-2's). */
export function gelu(x: Tensor): Tensor { return geluPacks(x) ? geluBf16(x) : unary(UN.gelu, 'gelu', x, 0, NO_ATTRS); }
/** x·sigmoid(x). */
export function silu(x: Tensor): Tensor { return unary(UN.silu, 'silu', x, 0, NO_ATTRS); }
/** x · factor. */
export function scale(x: Tensor, factor: number): Tensor { return unary(UN.scale, 'scale', x, factor, { factor }); }

const CASTABLE: readonly DType[] = ['float32', 'float64', 'bfloat16', 'float16', 'int32'];

function castData(x: Tensor, to: DType, d: Storage): void {
  // Contiguous source first (cast kernels are flat).
  let src = x;
  if (!x.isContiguous()) {
    src = empty(x.shape, x.dtype);
    copyStrided(src, x);
  }
  const n = x.size;
  if (x.dtype === 'int32' || to === 'int32') {
    const s = src.data, o = src.offset;
    if (to === 'int32') {
      // Through float32 for 16-bit inputs; truncation toward zero like PyTorch's .int().
      const f = x.dtype === 'float32' || x.dtype === 'float64' ? s : new Float32Array(n);
      if (f !== s) castContig(n, x.dtype as CastDType, s, o, 'float32', f, 0);
      const fo = f === s ? o : 0;
      for (let i = 0; i < n; i++) d[i] = Math.trunc(f[fo + i]!);
    } else if (to === 'float32' || to === 'float64') {
      for (let i = 0; i < n; i++) d[i] = s[o + i]!;
    } else {
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = s[o + i]!;
      castContig(n, 'float32', f, 0, to as CastDType, d, 0);
    }
  } else {
    castContig(n, x.dtype as CastDType, src.data, src.offset, to as CastDType, d, 0);
  }
  if (src !== x) src.dispose();
}

/**
 * Converts to another dtype (float32, float64, bfloat16, float16, int32). Returns x
 * itself when the dtype already matches. 16-bit formats round to nearest even
 * (src/core/dtype.ts). Differentiable between float dtypes: the gradient casts back.
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (!CASTABLE.includes(dtype)) throw new Error(`cast: unknown dtype '${dtype}'`);
  if (x.dtype === dtype) return x;
  const out = empty(x.shape, dtype);
  castData(x, dtype, out.data);
  return record('cast', { to: dtype }, [x], out);
}

/** The elements of t in row-major order as a new Float32Array (16-bit formats decoded). */
export function toFloat32Array(t: Tensor): Float32Array {
  const out = allocStorage('float32', t.size) as Float32Array;
  if (t.size === 0) return out;
  if (t.dtype === 'float32') copyStrided({ data: out, offset: 0, shape: t.shape, strides: contiguousStrides(t.shape) }, t);
  else castData(t, 'float32', out);
  return out;
}
