// GELU under train.precision=bf16: the forward is one fused kernel that writes the fp32
// output and the bf16 copy of the input that backward reads (native/nn-lowp.c), so the
// fp32 input (the c_fc output, the largest activation of a block) can be released after
// the forward (autograd/saved-pack.ts). Backward computes in fp32 from the bf16 copy.
import { empty, type Tensor } from '../core/tensor.js';
import { record, isGradEnabled } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import { accumulateGrad } from '../autograd/accumulate.js';
import { lowpKind } from '../backend/precision.js';
import { dense } from '../backend/nn-kernels.js';
import { geluBwdBf16In, geluFwdBf16Pack } from '../backend/nn-lowp-kernels.js';

/** Whether gelu(x) should take the bf16 saved-input path. */
export function geluPacks(x: Tensor): boolean {
  return x.dtype === 'float32' && lowpKind() === 'bfloat16' && x.requiresGrad && isGradEnabled();
}

export function geluBf16(x: Tensor): Tensor {
  const xd = dense(x);
  const out = empty(x.shape, 'float32');
  const xh = empty(x.shape, 'bfloat16');
  const xa = xd.data as Float32Array;
  geluFwdBf16Pack(x.size, xd.offset ? xa.subarray(xd.offset) : xa, out.data as Float32Array, xh.data as Uint16Array);
  if (xd !== x) xd.dispose();
  return record('gelu', {}, [x], out, [xh], xh, [0]);
}

/** Gradient of a gelu node recorded by geluBf16 (its ctx is the saved bf16 input). */
export function geluBf16Backward(node: Node, g: Tensor): void {
  const x = node.inputs[0]!;
  if (!x.requiresGrad) return;
  const xh = node.ctx as Tensor;
  const gc = dense(g);
  const ga = gc.data as Float32Array, gd = gc.offset ? ga.subarray(gc.offset) : ga;
  if (x.grad) {
    geluBwdBf16In(x.size, xh.data as Uint16Array, gd, x.grad.data as Float32Array, true);
  } else {
    const dx = empty(x.shape, 'float32');
    geluBwdBf16In(x.size, xh.data as Uint16Array, gd, dx.data as Float32Array, false);
    accumulateGrad(x, dx, true);
  }
  if (gc !== g) gc.dispose();
}
