// Activations saved for backward in 16 bits (train.precision=bf16/fp16).
//
// Athanor is eager and its intermediates live until their scope ends, so halving what
// is held for backward takes two things: ops that, in mixed precision, keep a 16-bit
// copy of the inputs their backward reads (matmul and attention keep the 16-bit GEMM
// operands they already made; GELU, LayerNorm, cross-entropy and softmax write a bf16
// copy from inside their fused kernels) and say so when they record ("packed"); and a
// way to give the fp32 buffer back once the forward is done with it: releaseActivation.
//
// Every recorded node pins the storage of each input whose data its backward may read,
// and of its output when its backward reads that. The default is to pin (an op not
// listed below is assumed to read everything), so releaseActivation is always safe: it
// frees an fp32 buffer only when no recorded node will read it, and otherwise does
// nothing (fp32 training, or a consumer that kept no 16-bit copy).
import type { StorageBox, Tensor } from '../core/tensor.js';
import { pool } from '../core/buffer-pool.js';
import type { Node } from './node.js';

// Ops whose gradient rule never touches its inputs' data (only shapes and the output
// gradient). Not neg/scale: their shared unary rule passes the input array to the kernel.
const INPUTS_UNREAD = new Set<string>(['add', 'sub', 'sum', 'mean', 'reshape', 'permute', 'expand', 'slice', 'contiguous', 'concat', 'dropout', 'embedding', 'groupCopy', 'groupReduce']);
// Ops whose gradient rule never touches its output's data.
const OUTPUT_UNREAD = new Set<string>([...INPUTS_UNREAD, 'neg', 'scale', 'mul', 'div', 'matmul', 'attention', 'layerNorm', 'rmsNorm', 'crossEntropy', 'gelu', 'relu', 'silu', 'log', 'pow']);

const pins = new WeakMap<StorageBox, number>();
let released = 0;
let releasedBytes = 0;
// Meta tensors have no buffer to free: a release marks the box, and src/plan/trace.ts
// (through setMetaReleaseSink) records the free in its allocation timeline.
const metaReleased = new WeakSet<StorageBox>();
let metaSink: ((t: Tensor) => void) | null = null;

/** Receives every meta tensor releaseActivation releases (set by src/plan/trace.ts). Returns the previous one. */
export function setMetaReleaseSink(fn: ((t: Tensor) => void) | null): ((t: Tensor) => void) | null {
  const prev = metaSink;
  metaSink = fn;
  return prev;
}

function pin(t: Tensor): void {
  pins.set(t.box, (pins.get(t.box) ?? 0) + 1);
}

/**
 * Called by record() for every node it keeps; `packed` lists the input indices whose data
 * backward will not read (it kept a 16-bit copy, or needs none), -1 standing for the output.
 */
export function pinForBackward(node: Node, packed: readonly number[] | undefined): void {
  if (!INPUTS_UNREAD.has(node.op)) {
    node.inputs.forEach((t, i) => { if (!packed || !packed.includes(i)) pin(t); });
  }
  if (!OUTPUT_UNREAD.has(node.op) && !(packed && packed.includes(-1))) pin(node.out);
}

/**
 * The caller will not read `t` (or any view of its storage) again in this forward: if no
 * recorded node will read its data in backward either (each consumer kept a 16-bit copy),
 * its buffer goes back to the pool now; later reads of any view of it throw. Otherwise a
 * no-op. Returns whether the buffer was released.
 */
export function releaseActivation(t: Tensor): boolean {
  const box = t.box;
  if (t.kept || (t.isLeaf && t.requiresGrad) || t.isDisposed) return false;
  if (box.meta ? metaReleased.has(box) : box.data === null) return false;
  if ((pins.get(box) ?? 0) > 0) return false;
  if (t.dtype !== 'float32' && t.dtype !== 'float64') return false;
  if (box.meta) {
    // The same decision on the meta device (meta ops record and pin as the real ones do):
    // the planner's trace sees the buffer freed here, as the real step frees it.
    metaReleased.add(box);
    metaSink?.(t);
    return true;
  }
  const data = box.data!;
  released++;
  releasedBytes += data.byteLength;
  if (box.pooled) pool.release(t.dtype, data);
  box.data = null;
  return true;
}

/** How many activation buffers releaseActivation has given back (tests and memory reports). */
export function releasedActivations(): { count: number; bytes: number } {
  return { count: released, bytes: releasedBytes };
}

/**
 * Bytes of activation storage the graph of `output` holds for backward right now: every
 * distinct live buffer among its nodes' inputs, outputs and saved tensors, parameters
 * (leaves that require grad) excluded. What releaseActivation shrinks; tests and the
 * memory benchmark compare it across precisions.
 */
export function activationBytes(output: Tensor): number {
  const seenNodes = new Set<Node>(), boxes = new Set<StorageBox>();
  const stack: Node[] = output.node ? [output.node] : [];
  const add = (t: Tensor | null | undefined): void => {
    if (!t || (t.isLeaf && t.requiresGrad) || t.box.meta || t.box.data === null) return;
    boxes.add(t.box);
  };
  while (stack.length) {
    const n = stack.pop()!;
    if (seenNodes.has(n)) continue;
    seenNodes.add(n);
    add(n.out);
    for (const s of n.saved) add(s);
    for (const t of n.inputs) {
      add(t);
      if (t.node && !seenNodes.has(t.node)) stack.push(t.node);
    }
  }
  let bytes = 0;
  for (const b of boxes) bytes += b.data!.byteLength;
  return bytes;
}
