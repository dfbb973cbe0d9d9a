// DLRM's feature interaction as one op: the bottom MLP's output x (B, D) and the F field
// embeddings e (F, B, D) give each sample the top MLP's input
//   [x_b, <z_i, z_j> for 0 <= i < j <= F],  z_0 = x_b, z_{f+1} = e[f, b]   → (B, D + F(F+1)/2)
// It replaces a batched matmul Z Z^T (per sample a 27 x 16 x 27 GEMM: B tiny BLAS calls
// forward and 2B backward), the concat building Z, the gather of the upper triangle and
// the concat with x. e is field-major so that a lookup's rows for one field are one
// contiguous block, and so are that field's row gradients after backward.
import { empty, type Tensor } from '../core/tensor.js';
import { shapeStr } from '../core/layout.js';
import { record } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { dense, floatData, gradTarget, type F } from '../backend/nn-kernels.js';
import { dotInteractionBwd, dotInteractionFwd } from '../backend/dot-interaction-kernels.js';
import { accumulateGrad } from '../autograd/accumulate.js';
import { dotInteractionMeta, isMeta } from './meta.js';

/** Pairs i < j among the F + 1 vectors of a sample. */
export function interactionPairs(numFields: number): number {
  return ((numFields + 1) * numFields) / 2;
}

export function dotInteraction(x: Tensor, e: Tensor): Tensor {
  if (x.ndim !== 2 || e.ndim !== 3) throw new Error(`dotInteraction: x must be (B, D) and e (F, B, D), got ${shapeStr(x.shape)} and ${shapeStr(e.shape)}`);
  const [B, D] = x.shape as [number, number];
  const [nF, Be, De] = e.shape as [number, number, number];
  if (Be !== B || De !== D) throw new Error(`dotInteraction: e ${shapeStr(e.shape)} does not fit x ${shapeStr(x.shape)} (expected (F, ${B}, ${D}))`);
  if (x.dtype !== e.dtype || (x.dtype !== 'float32' && x.dtype !== 'float64')) throw new Error(`dotInteraction: x and e must both be float32 or both float64, got ${x.dtype} and ${e.dtype}`);
  if (isMeta(x) || isMeta(e)) return dotInteractionMeta(x, e);
  const xd = dense(x), ed = dense(e);
  const out = empty([B, D + interactionPairs(nF)], x.dtype);
  dotInteractionFwd(floatData(xd), floatData(ed), out.data as F, B, nF, D);
  if (xd !== x) xd.dispose();
  if (ed !== e) ed.dispose();
  return record('dotInteraction', {}, [x, e], out, []);
}

/** The gradient buffer a kernel may write t's gradient into directly, or a fresh one to accumulate afterwards. */
function target(t: Tensor): { buf: F; acc: boolean; owned: Tensor | null } {
  if (t.isContiguous() && t.offset === 0) {
    const { g, fresh } = gradTarget(t, true);
    return { buf: g.data as F, acc: !fresh, owned: null };
  }
  const o = empty(t.shape, t.dtype);
  return { buf: o.data as F, acc: false, owned: o };
}

export function dotInteractionBackward(node: Node<'dotInteraction'>, gOut: Tensor): void {
  const [x, e] = node.inputs as [Tensor, Tensor];
  if (!x.requiresGrad && !e.requiresGrad) return;
  const [B, D] = x.shape as [number, number];
  const nF = e.shape[0]!;
  const g = dense(gOut), xd = dense(x), ed = dense(e);
  const tx = x.requiresGrad ? target(x) : null, te = e.requiresGrad ? target(e) : null;
  dotInteractionBwd(floatData(g), floatData(xd), floatData(ed), tx?.buf ?? null, te?.buf ?? null, B, nF, D, tx?.acc ?? false, te?.acc ?? false);
  if (tx?.owned) accumulateGrad(x, tx.owned, true);
  if (te?.owned) accumulateGrad(e, te.owned, true);
  if (g !== gOut) g.dispose();
  if (xd !== x) xd.dispose();
  if (ed !== e) ed.dispose();
}
