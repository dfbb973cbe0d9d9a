// Autoregressive sampling with temperature and top-k, seeded. Each step runs the
// model over the last seqLen tokens (no KV cache: the demo models are small).
import { fromStorage } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { noGrad } from '../autograd/tape.js';
import { Rng } from '../core/rng.js';
import type { GPT } from './gpt.js';

export interface SampleOptions {
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  seed?: number;
  /** Stop when this token is produced (not included in the output). */
  stopToken?: number;
}

export function generate(model: GPT, prompt: readonly number[], opts: SampleOptions): number[] {
  const rng = new Rng(opts.seed ?? 0);
  const temp = opts.temperature ?? 1;
  const V = model.cfg.vocabSize, Tmax = model.cfg.seqLen;
  const ids = [...prompt];
  if (ids.length === 0) throw new Error('generate: the prompt must contain at least one token');
  const out: number[] = [];
  const wasTraining = model.training;
  model.eval();
  try {
    for (let i = 0; i < opts.maxNewTokens; i++) {
      const ctx = ids.slice(-Tmax);
      const T = ctx.length;
      const logits = noGrad(() => scope(() => {
        const l = model.forward(fromStorage(Int32Array.from(ctx), [1, T], 'int32'));
        const d = l.data, base = l.offset + (T - 1) * V;
        return Float64Array.from({ length: V }, (_, j) => d[base + j]!);
      }));
      const next = pick(logits, temp, opts.topK ?? 0, rng);
      if (opts.stopToken !== undefined && next === opts.stopToken) break;
      ids.push(next);
      out.push(next);
    }
  } finally {
    model.train(wasTraining);
  }
  return out;
}

function pick(logits: Float64Array, temp: number, topK: number, rng: Rng): number {
  if (temp <= 0) return argmax(logits);
  let cut = -Infinity;
  if (topK > 0 && topK < logits.length) cut = [...logits].sort((a, b) => b - a)[topK - 1]!;
  let max = -Infinity;
  for (const v of logits) if (v >= cut && v > max) max = v;
  let sum = 0;
  const p = new Float64Array(logits.length);
  for (let j = 0; j < logits.length; j++) {
    if (logits[j]! < cut) continue;
    p[j] = Math.exp((logits[j]! - max) / temp);
    sum += p[j]!;
  }
  let u = rng.uniform() * sum;
  for (let j = 0; j < p.length; j++) {
    u -= p[j]!;
    if (u <= 0 && p[j]! > 0) return j;
  }
  return argmax(logits);
}

function argmax(a: Float64Array): number {
  let best = 0;
  for (let j = 1; j < a.length; j++) if (a[j]! > a[best]!) best = j;
  return best;
}
