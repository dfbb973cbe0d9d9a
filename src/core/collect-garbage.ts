// A full garbage collection on demand, for code that has just let go of large buffers it
// knows are unreachable (expert parallelism's old row capacity; the memory-peak tests).
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A full garbage collection now. V8 frees an ArrayBuffer's memory only when a garbage collection
 * finds it unreachable; the pooled buffers of an old row capacity have lived through steps
 * (old generation), so only a mark-compact frees them, and one runs when V8's heuristics
 * choose: meanwhile the new capacity's buffers are allocated beside them (moe-tiny dropless
 * ep=2: 33-40 MiB of dropped buffers still counted at the step's peak, 15% of it). The
 * collection these buffers need anyway is run at the moment they are dropped. Uses the
 * process's `gc` where node runs with --expose-gc, else the same function taken once from
 * a fresh context after turning the flag on (V8 installs `gc` in contexts created after).
 */
export function collectGarbage(): void {
  collector ??= findCollector();
  collector();
}
let collector: (() => void) | undefined;
function findCollector(): () => void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return g;
  v8.setFlagsFromString('--expose-gc');
  const f = runInNewContext('gc') as unknown;
  // A runtime without a callable collector only loses the early release: the dropped buffers
  // then go when V8 next collects, as before. Training must not stop over it.
  return typeof f === 'function' ? (f as () => void) : () => undefined;
}
