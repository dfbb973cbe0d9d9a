// Scopes bound the lifetime of intermediate tensors. Everything created inside a
// scope is disposed when it ends (its buffers go back to the pool) unless it is
// returned, kept, or attached as a gradient. Using a disposed tensor throws, so a
// lifetime bug is loud instead of silent memory corruption.
import type { Tensor } from './tensor.js';

const stack: Set<Tensor>[] = [];

export function trackTensor(t: Tensor): void {
  const top = stack[stack.length - 1];
  if (top) top.add(t);
}

/** Removes a tensor from the current scopes (it will outlive them). */
export function untrack(t: Tensor): void {
  for (const s of stack) s.delete(t);
}

export function beginScope(): Set<Tensor> {
  const s = new Set<Tensor>();
  stack.push(s);
  return s;
}

/** Ends `s`: disposes its tensors except those in `keep`, which move to the enclosing scope. */
export function endScope(s: Set<Tensor>, keep: Iterable<Tensor> = []): void {
  const top = stack.pop();
  if (top !== s) throw new Error('endScope: scopes must end in the order they began');
  const kept = new Set(keep);
  const parent = stack[stack.length - 1];
  for (const t of s) {
    if (t.kept || kept.has(t)) {
      parent?.add(t);
      continue;
    }
    t.dispose();
  }
}

/** Runs fn in a scope; tensors reachable from its result (tensor, array or plain object) survive. */
export function scope<R>(fn: () => R): R {
  const s = beginScope();
  let result: R;
  try {
    result = fn();
  } catch (e) {
    endScope(s);
    throw e;
  }
  endScope(s, collectTensors(result));
  return result;
}

function collectTensors(x: unknown, out: Tensor[] = [], depth = 0): Tensor[] {
  if (x === null || typeof x !== 'object' || depth > 3) return out;
  if ('box' in x && 'shape' in x && 'strides' in x) {
    out.push(x as Tensor);
    return out;
  }
  if (Array.isArray(x)) for (const v of x) collectTensors(v, out, depth + 1);
  else if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) collectTensors(v, out, depth + 1);
  return out;
}
