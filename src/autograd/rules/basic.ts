// Gradient rules for element-wise, reduction and layout ops. Rules run with the tape
// off, so they may call the public ops; every temporary is disposed here or handed to
// accumulation as owned. Unary rules use fused C kernels that write or add
// f'(x)·dy straight into x.grad (no dy·f'(x) temporary, no extra pass).
import type { GradRuleTable, Node } from '../node.js';
import { Tensor, empty, zeros } from '../../core/tensor.js';
import { untrack } from '../../core/scope.js';
import { contiguousStrides, sameShape } from '../../core/layout.js';
import type { DType } from '../../core/dtype.js';
import { accumulateGrad } from '../accumulate.js';
import { BIN, UN, binaryInto, copyStrided, scatterAddInto, unaryBackwardContig, type UnCode, type View } from '../../backend/basic-kernels.js';
import type { FArr } from '../../backend/reference/basic.js';
import { div, mul, where } from '../../ops/elementwise.js';
import { cast, neg } from '../../ops/unary.js';
import { geluBf16Backward } from '../../ops/gelu-lowp.js';
import '../../ops/reduce.js'; // installs the native sumToShape used by accumulateGrad

/**
 * t.grad += g. Unlike a bare accumulateGrad it copies (instead of zero-fill + add) on
 * first use and adds non-contiguous g with the strided kernel instead of a JS loop.
 */
export function accumulate(t: Tensor, g: Tensor, owned = false): void {
  if (!t.requiresGrad) {
    if (owned) g.dispose();
    return;
  }
  if (!sameShape(t.shape, g.shape) || g.dtype !== t.dtype) {
    accumulateGrad(t, g, owned);
    return;
  }
  const contig = g.isContiguous();
  if (t.grad) {
    if (contig) accumulateGrad(t, g, owned);
    else {
      binaryInto(BIN.add, t.grad, t.grad, g);
      if (owned) g.dispose();
    }
    return;
  }
  if (owned && contig && g.offset === 0 && g.box.refs === 1) {
    accumulateGrad(t, g, true); // adopted without a copy
    return;
  }
  const c = empty(t.shape, t.dtype);
  copyStrided(c, g);
  if (owned) g.dispose();
  accumulateGrad(t, c, true);
}

/**
 * Makes a contiguous, zero-offset view of the node's output gradient x.grad without a
 * copy when nothing else holds that storage (backward disposes gOut right after the
 * rule, leaving the view as the sole owner). Returns false when it cannot.
 */
function adoptAsGrad(t: Tensor, g: Tensor, shape: readonly number[]): boolean {
  if (t.grad || !t.requiresGrad || g.dtype !== t.dtype || g.offset !== 0 || g.box.refs !== 1 || !g.isContiguous() || g.kept) return false;
  const v = g.view(shape, contiguousStrides(shape), 0);
  untrack(v);
  v.kept = true;
  t.grad = v;
  return true;
}

/** A strided view of t's gradient buffer (created zero-filled when absent). */
function gradTarget(t: Tensor): Tensor {
  if (!t.grad) accumulateGrad(t, zeros(t.shape, t.dtype), true);
  return t.grad!;
}

function contig(g: Tensor): Tensor {
  if (g.isContiguous()) return g;
  const c = empty(g.shape, g.dtype);
  copyStrided(c, g);
  return c;
}

/** g viewed with size-1 dims (stride 0) re-inserted at the reduced axes. */
function keepDimsView(g: View, xShape: readonly number[], axes: readonly number[], keepDims: boolean): View {
  const shape = xShape.map((d, i) => (axes.includes(i) ? 1 : d));
  if (keepDims) return { data: g.data, offset: g.offset, shape, strides: g.strides };
  const strides: number[] = [];
  let k = 0;
  for (let i = 0; i < xShape.length; i++) strides.push(axes.includes(i) ? 0 : g.strides[k++]!);
  return { data: g.data, offset: g.offset, shape, strides };
}

function unaryRule(op: UnCode, useY: boolean) {
  return (node: Node, g: Tensor): void => {
    const x = node.inputs[0]!;
    if (!x.requiresGrad) return;
    const p = node.op === 'pow' ? (node.attrs as { exponent: number }).exponent : node.op === 'scale' ? (node.attrs as { factor: number }).factor : 0;
    const xc = useY ? node.out : contig(x);
    const gc = contig(g);
    const n = x.size;
    const xd = xc.data as FArr, gd = gc.data as FArr;
    if (x.grad) {
      unaryBackwardContig(op, n, xd, xc.offset, xd, xc.offset, gd, gc.offset, x.grad.data as FArr, 0, p, true);
    } else {
      const dx = empty(x.shape, x.dtype);
      unaryBackwardContig(op, n, xd, xc.offset, xd, xc.offset, gd, gc.offset, dx.data as FArr, 0, p, false);
      accumulateGrad(x, dx, true);
    }
    if (xc !== x && xc !== node.out) xc.dispose();
    if (gc !== g) gc.dispose();
  };
}

/** x.grad += broadcast(g · s) where g has x's shape with some dims of size 1 (or fewer leading dims). */
function accumulateBroadcast(x: Tensor, g: View, s: number): void {
  if (!x.requiresGrad) return;
  let src: View = g;
  let tmp: Tensor | null = null;
  if (s !== 1) {
    tmp = empty(g.shape, x.dtype);
    copyStrided(tmp, g);
    const d = tmp.data as FArr;
    for (let i = 0; i < d.length; i++) d[i]! *= s;
    src = tmp;
  }
  if (x.grad) binaryInto(BIN.add, x.grad, x.grad, src);
  else {
    const dx = empty(x.shape, x.dtype);
    copyStrided(dx, src);
    accumulateGrad(x, dx, true);
  }
  tmp?.dispose();
}

const geluFp32Rule = unaryRule(UN.gelu, false);

type Rules = Pick<GradRuleTable,
  'add' | 'sub' | 'mul' | 'div' | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'pow' | 'tanh' | 'sigmoid' | 'relu' | 'gelu' | 'silu' | 'scale' |
  'sum' | 'mean' | 'max' | 'reshape' | 'permute' | 'expand' | 'slice' | 'contiguous' | 'concat' | 'gather' | 'where' | 'cast'>;

export const basicRules: Rules = {
  add(node, g) {
    const [a, b] = node.inputs as [Tensor, Tensor];
    accumulate(a, g);
    accumulate(b, g);
  },
  sub(node, g) {
    const [a, b] = node.inputs as [Tensor, Tensor];
    accumulate(a, g);
    if (b.requiresGrad) accumulate(b, neg(g), true);
  },
  mul(node, g) {
    const [a, b] = node.inputs as [Tensor, Tensor];
    if (a.requiresGrad) accumulate(a, mul(g, b), true);
    if (b.requiresGrad) accumulate(b, mul(g, a), true);
  },
  div(node, g) {
    const [a, b] = node.inputs as [Tensor, Tensor];
    if (a.requiresGrad) accumulate(a, div(g, b), true);
    if (b.requiresGrad) {
      // d(a/b)/db = -a/b^2 = -(a/b)/b, from the inputs (the output may be a reused buffer).
      const q = div(a, b), t = mul(g, q);
      q.dispose();
      const u = div(t, b);
      t.dispose();
      const v = neg(u);
      u.dispose();
      accumulate(b, v, true);
    }
  },
  neg: unaryRule(UN.neg, false),
  exp: unaryRule(UN.exp, true),
  log: unaryRule(UN.log, false),
  sqrt: unaryRule(UN.sqrt, true),
  rsqrt: unaryRule(UN.rsqrt, true),
  pow: unaryRule(UN.pow, false),
  tanh: unaryRule(UN.tanh, true),
  sigmoid: unaryRule(UN.sigmoid, true),
  relu: unaryRule(UN.relu, false),
  gelu: (node, g) => (node.ctx ? geluBf16Backward(node, g) : geluFp32Rule(node, g)),
  silu: unaryRule(UN.silu, false),
  scale: unaryRule(UN.scale, false),
  sum(node, g) {
    const x = node.inputs[0]!;
    accumulateBroadcast(x, keepDimsView(g, x.shape, node.attrs.axes, node.attrs.keepDims), 1);
  },
  mean(node, g) {
    const x = node.inputs[0]!;
    let count = 1;
    for (const a of node.attrs.axes) count *= x.shape[a]!;
    accumulateBroadcast(x, keepDimsView(g, x.shape, node.attrs.axes, node.attrs.keepDims), 1 / count);
  },
  max(node, g) {
    const x = node.inputs[0]!;
    if (!x.requiresGrad) return;
    const idx = node.saved[0]!;
    const axes = [node.attrs.axis];
    const gv = keepDimsView(g, x.shape, axes, node.attrs.keepDims);
    const iv = keepDimsView(idx, x.shape, axes, node.attrs.keepDims);
    scatterAddInto(gradTarget(x), gv, iv, node.attrs.axis);
  },
  reshape(node, g) {
    const x = node.inputs[0]!;
    if (!x.requiresGrad || adoptAsGrad(x, g, x.shape)) return;
    const gc = contig(g);
    const v = gc.view(x.shape, contiguousStrides(x.shape), gc.offset);
    accumulate(x, v);
    v.dispose();
    if (gc !== g) gc.dispose();
  },
  permute(node, g) {
    const x = node.inputs[0]!;
    if (!x.requiresGrad) return;
    const dims = node.attrs.dims;
    const inv = new Array<number>(dims.length);
    dims.forEach((d, i) => { inv[d] = i; });
    const v = g.view(inv.map((i) => g.shape[i]!), inv.map((i) => g.strides[i]!), g.offset);
    accumulate(x, v);
    v.dispose();
  },
  expand(node, g) {
    accumulate(node.inputs[0]!, g); // shapes differ: reduced by the native sumToShape
  },
  slice(node, g) {
    const x = node.inputs[0]!;
    if (!x.requiresGrad) return;
    const { axis, start } = node.attrs;
    const dst = gradTarget(x);
    const region: View = { data: dst.data, offset: start * dst.strides[axis]!, shape: g.shape, strides: dst.strides };
    binaryInto(BIN.add, region, region, g);
  },
  contiguous(node, g) {
    const x = node.inputs[0]!;
    if (!x.requiresGrad || adoptAsGrad(x, g, x.shape)) return;
    accumulate(x, g);
  },
  concat(node, g) {
    const axis = node.attrs.axis;
    let pos = 0;
    for (const x of node.inputs) {
      const len = x.shape[axis]!;
      if (x.requiresGrad && len > 0) {
        const v = g.view(x.shape, g.strides, g.offset + pos * g.strides[axis]!);
        accumulate(x, v);
        v.dispose();
      }
      pos += len;
    }
  },
  gather(node, g) {
    const [x, index] = node.inputs as [Tensor, Tensor];
    if (!x.requiresGrad) return;
    scatterAddInto(gradTarget(x), g, index, node.attrs.axis);
  },
  where(node, g) {
    const [cond, a, b] = node.inputs as [Tensor, Tensor, Tensor];
    if (a.requiresGrad) accumulate(a, where(cond, g, 0), true);
    if (b.requiresGrad) accumulate(b, where(cond, 0, g), true);
  },
  cast(node, g) {
    const x = node.inputs[0]!;
    if (!x.requiresGrad) return;
    const back = cast(g, x.dtype as DType);
    accumulate(x, back, back !== g);
  },
};
