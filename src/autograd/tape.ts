// Reverse-mode autograd. Ops record nodes while grad mode is on and some input
// requires grad; backward walks the nodes reachable from the loss in reverse
// creation order, calls each op's rule from the one table, and frees each node's
// saved tensors and its output gradient as soon as the rule has run.
import { ones } from '../core/tensor.js';
import type { Tensor } from '../core/tensor.js';
import { untrack } from '../core/scope.js';
import { shapeStr } from '../core/layout.js';
import type { Node, OpAttrs, OpName } from './node.js';
import { gradRuleFor } from './grad-rules.js';
import { pinForBackward } from './saved-pack.js';

let gradEnabled = true;
let nextSeq = 0;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with recording off (evaluation, optimizer updates, gradient rules). */
export function noGrad<R>(fn: () => R): R {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function setGradEnabled(on: boolean): boolean {
  const prev = gradEnabled;
  gradEnabled = on;
  return prev;
}

/**
 * Records `out = op(inputs)` when any input requires grad. Returns `out` for chaining.
 * `saved` tensors are owned by the node and disposed after its rule runs.
 */
export function record<K extends OpName>(
  op: K,
  attrs: OpAttrs[K],
  inputs: readonly Tensor[],
  out: Tensor,
  saved: Tensor[] = [],
  ctx?: unknown,
  packed?: readonly number[],
): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) {
    for (const s of saved) if (s !== out && !inputs.includes(s)) s.dispose();
    return out;
  }
  const node: Node<K> = { seq: nextSeq++, op, attrs, inputs, out, saved, ctx };
  out.requiresGrad = true;
  out.node = node as unknown as Node;
  pinForBackward(node as unknown as Node, packed);
  return out;
}

export interface BackwardOptions {
  /** Gradient of the output; defaults to ones (the output must then have one element). */
  grad?: Tensor;
  /** Called once for each leaf whose gradient is complete (for overlapping gradient communication). */
  onLeafGradReady?: (leaf: Tensor) => void;
  /**
   * Further roots backpropagated in the same pass, each with its own seed gradient (a
   * pipeline stage's MoE auxiliary loss beside its output): one walk, so every node's rule
   * runs once with all contributions accumulated.
   */
  also?: { output: Tensor; grad: Tensor }[];
}

export function backward(output: Tensor, opts: BackwardOptions = {}): void {
  if (!output.requiresGrad) throw new Error('backward: output does not require grad (no parameter took part, or it was computed under noGrad)');
  let g = opts.grad;
  if (!g) {
    if (output.size !== 1) throw new Error(`backward: output has shape ${shapeStr(output.shape)}; pass opts.grad for non-scalar outputs`);
    g = ones(output.shape, output.dtype);
  }
  const extra = (opts.also ?? []).filter((r) => r.output.requiresGrad && r.output !== output);
  const nodes = collectNodes([output, ...extra.map((r) => r.output)]);
  const pendingUses = new Map<Tensor, number>();
  if (opts.onLeafGradReady) {
    for (const n of nodes) for (const inp of n.inputs) if (inp.requiresGrad && inp.isLeaf) pendingUses.set(inp, (pendingUses.get(inp) ?? 0) + 1);
  }
  const prev = setGradEnabled(false);
  try {
    if (output.isLeaf) {
      accumulateInto(output, g);
      return;
    }
    setGrad(output, g);
    for (const r of extra) {
      if (r.output.isLeaf) { accumulateInto(r.output, r.grad); continue; }
      // As the main seed, the walk owns (and disposes) it once the root's rule ran.
      if (!r.output.grad) setGrad(r.output, r.grad);
      else { const a = r.output.grad.data, b = r.grad.data; for (let i = 0; i < r.output.size; i++) a[r.output.grad.offset + i]! += b[r.grad.offset + i]!; }
    }
    for (const node of nodes) {
      const out = node.out;
      const gOut = out.grad;
      if (gOut) {
        (gradRuleFor(node.op) as (n: Node, g: Tensor) => void)(node, gOut);
        gOut.dispose();
        out.grad = null;
      }
      for (const s of node.saved) s.dispose();
      node.saved = [];
      if (opts.onLeafGradReady) {
        for (const inp of node.inputs) {
          if (!pendingUses.has(inp)) continue;
          const left = pendingUses.get(inp)! - 1;
          pendingUses.set(inp, left);
          if (left === 0) opts.onLeafGradReady(inp);
        }
      }
    }
  } finally {
    setGradEnabled(prev);
    for (const n of nodes) n.out.node = null;
  }
}

function setGrad(t: Tensor, g: Tensor): void {
  t.grad = g;
}

// Imported lazily by rules through accumulate.ts; here only for the leaf-output corner case.
function accumulateInto(t: Tensor, g: Tensor): void {
  if (!t.grad) {
    untrack(g);
    t.grad = g;
  } else {
    const a = t.grad.data, b = g.data;
    for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
  }
}

/** Nodes reachable from the outputs, in reverse creation order. */
function collectNodes(outputs: Tensor[]): Node[] {
  const seen = new Set<Node>();
  const stack: Node[] = [];
  for (const output of outputs) if (output.node) stack.push(output.node);
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const inp of n.inputs) if (inp.node && !seen.has(inp.node)) stack.push(inp.node);
  }
  return [...seen].sort((a, b) => b.seq - a.seq);
}
