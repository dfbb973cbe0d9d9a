// Keeping one micro-batch's autograd graph alive across awaits. The trainer's usual
// `scope(() => { forward; backward })` frees intermediates when the micro-step ends, but a
// pipeline stage runs other micro-batches (and waits for messages) between a forward and
// its backward, and scopes must nest. So the forward runs in its own scope, everything the
// graph can still reach (node outputs, saved tensors, inputs) is detached from the scope
// stack, and released by hand after the backward.
import type { Tensor } from '../../core/tensor.js';
import { beginScope, endScope, untrack } from '../../core/scope.js';

export interface LiveGraph {
  out: Tensor;
  /** A second root the backward seeds too (a non-last stage's MoE auxiliary losses), or null. */
  aux: Tensor | null;
  /** Tensors the backward may still read; released by release(). */
  tensors: Tensor[];
}

function reachable(outs: Tensor[]): Tensor[] {
  const found = new Set<Tensor>(outs);
  const seen = new Set<object>();
  const stack = outs.flatMap((o) => (o.node ? [o.node] : []));
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    found.add(n.out);
    for (const t of n.saved) found.add(t);
    for (const t of n.inputs) {
      found.add(t);
      if (t.node && !seen.has(t.node)) stack.push(t.node);
    }
  }
  return [...found].filter((t) => !t.kept);
}

/**
 * Runs a forward so that its graph outlives the call (see the file comment). `takeAux`
 * (run right after, inside the same scope) hands over a second root kept alive with it.
 */
export function forwardDetached(fn: () => Tensor, takeAux?: () => Tensor | null): LiveGraph {
  const s = beginScope();
  let out: Tensor;
  let aux: Tensor | null = null;
  try {
    out = fn();
    aux = takeAux?.() ?? null;
  } catch (e) {
    endScope(s);
    throw e;
  }
  const tensors = reachable(aux ? [out, aux] : [out]);
  endScope(s, tensors);
  for (const t of tensors) untrack(t);
  return { out, aux, tensors };
}

/** Frees what a forward kept (after its backward, or when a step is abandoned). */
export function release(g: LiveGraph): void {
  for (const t of g.tensors) t.dispose();
  g.tensors = [];
}
