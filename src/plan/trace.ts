// Traces one training micro-step of a real model on the meta device: the model's own
// forward code runs on shape-only tensors (src/ops/meta.ts), then the tape it recorded
// is walked in backward order the way autograd/tape.ts walks it, allocating and freeing
// gradient buffers with the same lifetimes (a node's output gradient and saved tensors
// are freed after its rule; recomputed blocks run their forward again, see
// autograd/checkpoint.ts). The result is a list of ops (class, FLOPs, bytes, which block)
// and a timeline of buffer allocations and frees, from which src/plan/ prices memory and
// time for any layout. Nothing is allocated.
import type { Tensor, StorageBox } from '../core/tensor.js';
import { metaTensor } from '../core/tensor.js';
import { scope } from '../core/scope.js';
import { setGradEnabled } from '../autograd/tape.js';
import type { Node } from '../autograd/node.js';
import type { CheckpointCtx } from '../autograd/checkpoint.js';
import { dtypeBytes, setMetaSink, type MetaOpEvent, type OpClass } from '../ops/meta.js';
import type { Module } from '../nn/module.js';
import { lowpKind } from '../backend/precision.js';
import { setMetaReleaseSink } from '../autograd/saved-pack.js';

export type Phase = 'forward' | 'backward' | 'recompute';

export interface TracedOp {
  op: string;
  cls: OpClass;
  phase: Phase;
  flops: number;
  bytes: number;
  /** Block index (-1 before the first block: embeddings; nBlocks after the last: head and loss). */
  block: number;
  /** Names of the parameters the op reads (empty for activation-only ops). */
  params: string[];
  /** Buffer ids of the op's inputs and output (see TraceResult.buffers). */
  ins: number[];
  out: number;
  /** GEMM (m, n, k); attention (B·H, Tq, Tk, D). */
  dims?: number[];
  /** Mixed precision: 16-bit casts and operands (see MetaOpEvent.lowp). */
  lowp?: MetaOpEvent['lowp'];
}

export interface TracedBuffer {
  id: number;
  bytes: number;
  shape: number[];
  /** 'activation' (forward output or saved), 'grad' (an activation's gradient), 'param-grad'. */
  kind: 'activation' | 'grad' | 'param-grad';
  block: number;
  /** The parameter this is the gradient of (param-grad) or null. */
  param: string | null;
  /** For 'grad': the buffer of the activation this is the gradient of (-1 if untraced). */
  of: number;
}

export type MemEvent = { t: 'alloc'; id: number } | { t: 'free'; id: number } | { t: 'mark'; what: 'forward-end' | 'step-end' };

export interface TraceResult {
  /** The compute precision the step was traced under (mixed precision changes buffers). */
  precision: 'fp32' | 'bf16';
  params: { name: string; shape: number[]; numel: number; block: number }[];
  numParams: number;
  ops: TracedOp[];
  buffers: TracedBuffer[];
  events: MemEvent[];
  nBlocks: number;
  /** Tokens (or samples) in the traced micro-batch. */
  items: number;
  /**
   * The model's own pipeline partitioner: layer ranges [lo, hi) of each of pp·v virtual
   * stages, as the trainer splits them (set by src/plan/models.ts; absent: an even split).
   */
  stagePartition?: (pp: number, v: number) => [number, number][];
}

/** Block index of a parameter name `h.{i}.…` (the GPT and MoE-GPT naming), else null. */
export function blockOfParam(name: string): number | null {
  const m = /^h\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : null;
}

interface TraceOptions {
  /** Number of blocks (parameters named h.{i}.*); ops touching no block parameter inherit the block of their inputs. */
  nBlocks: number;
  items: number;
}

/**
 * Runs `step` (which builds the loss from meta inputs with the model's real code) and
 * simulates backward from the loss it returns.
 */
export function traceStep(model: Module, step: () => Tensor, opts: TraceOptions): TraceResult {
  const named = model.namedParameters();
  const paramName = new Map<StorageBox, string>();
  for (const [n, p] of named) paramName.set(p.box, n);
  const headBlock = opts.nBlocks;
  const params = named.map(([name, p]) => ({ name, shape: [...p.shape], numel: p.size, block: blockOfParam(name) ?? (/^(wte|wpe)\b/.test(name) ? -1 : headBlock) }));

  const buffers: TracedBuffer[] = [];
  const ops: TracedOp[] = [];
  const events: MemEvent[] = [];
  const idOf = new Map<StorageBox, number>();
  const live: { box: StorageBox; id: number }[] = [];
  let phase: Phase = 'forward';

  const blockOfBox = (b: StorageBox): number => {
    const pn = paramName.get(b);
    if (pn !== undefined) return params.find((p) => p.name === pn)!.block;
    const id = idOf.get(b);
    return id === undefined ? -1 : buffers[id]!.block;
  };
  const register = (t: Tensor, kind: TracedBuffer['kind'], block: number, param: string | null = null, of = -1): number => {
    const id = buffers.length;
    buffers.push({ id, bytes: t.size * dtypeBytes(t.dtype), shape: [...t.shape], kind, block, param, of });
    idOf.set(t.box, id);
    live.push({ box: t.box, id });
    events.push({ t: 'alloc', id });
    return id;
  };
  const reap = (): void => {
    for (let i = live.length - 1; i >= 0; i--) {
      if (live[i]!.box.refs <= 0) {
        events.push({ t: 'free', id: live[i]!.id });
        live.splice(i, 1);
      }
    }
  };
  const bufId = (t: Tensor): number => idOf.get(t.box) ?? -1;

  let pending: Tensor[] = [];
  // The forward (or recompute) op that produced each tape node's output.
  const opOf = new Map<Tensor, TracedOp>();
  const prevSink = setMetaSink({
    alloc: (t) => { pending.push(t); },
    op: (e) => {
      // Buffers allocated by this op belong to the op's block.
      const pnames = e.inputs.map((t) => paramName.get(t.box)).filter((n): n is string => n !== undefined);
      const pb = pnames.map((n) => params.find((p) => p.name === n)!.block);
      const block = pb.length ? Math.max(...pb) : Math.max(-1, ...e.inputs.map((t) => blockOfBox(t.box)));
      for (const t of pending) if (!idOf.has(t.box)) register(t, 'activation', block);
      pending = [];
      const op: TracedOp = { op: e.op, cls: e.cls, phase, flops: e.flops, bytes: e.bytes, block, params: pnames, ins: e.inputs.map(bufId), out: bufId(e.out), dims: e.dims, lowp: e.lowp };
      ops.push(op);
      opOf.set(e.out, op);
      reap();
    },
  });
  // releaseActivation (autograd/saved-pack.ts) frees a buffer before its tensors are
  // disposed (the model's forward calls it once no later forward op reads it and no
  // recorded backward does): the free happens there, as in the real step.
  const prevRelease = setMetaReleaseSink((t) => {
    const i = live.findIndex((l) => l.box === t.box);
    if (i < 0) return;
    events.push({ t: 'free', id: live[i]!.id });
    live.splice(i, 1);
  });
  const paramGrads = new Set<string>();
  // Gradients of non-parameter leaves (a recomputed block's detached inputs), handed back to the caller.
  const handedBack = new Map<Tensor, Tensor>();
  const gradFor = (t: Tensor, grads: Map<Tensor, Tensor>): void => {
    if (grads.has(t) || !t.requiresGrad) return;
    const pn = paramName.get(t.box);
    if (pn !== undefined) {
      // Parameter gradients persist across steps (zeroed in place): allocated once.
      if (!paramGrads.has(pn)) { paramGrads.add(pn); register(metaTensor(t.shape, t.dtype), 'param-grad', blockOfBox(t.box), pn); }
      return;
    }
    const g = metaTensor(t.shape, t.dtype);
    register(g, 'grad', blockOfBox(t.box), null, bufId(t));
    grads.set(t, g);
  };
  const backwardOp = (node: Node): void => {
    const f = opOf.get(node.out);
    if (f) ops.push({ ...f, phase: 'backward', flops: f.flops * backwardFactor(f.cls), bytes: f.bytes * backwardFactor(f.cls) });
    // The rule's transient 16-bit casts (mixed precision): live together during the rule.
    const casts = (f?.lowp?.bwdCasts ?? []).map((n) => metaTensor([n], 'bfloat16'));
    for (const t of casts) register(t, 'grad', f!.block);
    for (const t of casts) t.dispose();
  };
  // The walk of tape.ts backward(): reverse creation order, each node's rule creates its
  // inputs' gradients, then its output gradient and saved tensors are freed.
  const walk = (out: Tensor, gOut0: Tensor): void => {
    const nodes = collectNodes(out);
    const grads = new Map<Tensor, Tensor>([[out, gOut0]]);
    try {
      for (const node of nodes) {
        const gOut = grads.get(node.out);
        if (!gOut) continue;
        if (node.op === 'checkpoint') recompute(node as Node<'checkpoint'>, gOut, grads);
        else {
          for (const inp of node.inputs) gradFor(inp, grads);
          backwardOp(node);
        }
        gOut.dispose();
        grads.delete(node.out);
        for (const s of node.saved) s.dispose();
        node.saved = [];
        reap();
      }
    } finally {
      for (const n of nodes) n.out.node = null;
    }
    for (const [t, g] of grads) if (t.isLeaf) handedBack.set(t, g);
  };
  // checkpointGrad (autograd/checkpoint.ts): run the block again with recording on, then
  // backpropagate through the fresh graph and fold the inputs' gradients back.
  const recompute = (node: Node<'checkpoint'>, gOut: Tensor, grads: Map<Tensor, Tensor>): void => {
    const ctx: CheckpointCtx = node.attrs;
    const inputs = node.inputs.slice(0, ctx.nInputs);
    const detached = inputs.map((x) => { const d = x.view(x.shape, x.strides, x.offset); d.requiresGrad = x.requiresGrad; return d; });
    // As checkpointGrad does, the recomputed graph lives in its own scope.
    scope(() => {
      phase = 'recompute';
      setGradEnabled(true);
      let inner: Tensor;
      try { inner = ctx.run(detached); } finally { setGradEnabled(false); }
      phase = 'backward';
      if (inner.requiresGrad) {
        const g = metaTensor(gOut.shape, gOut.dtype);
        register(g, 'grad', blockOfBox(gOut.box), null, bufId(inner));
        walk(inner, g);
      }
    });
    reap();
    detached.forEach((d, i) => {
      const g = handedBack.get(d);
      if (!g) return;
      handedBack.delete(d);
      gradFor(inputs[i]!, grads);
      g.dispose();
    });
    reap();
  };
  try {
    scope(() => {
      const loss = step();
      reap();
      events.push({ t: 'mark', what: 'forward-end' });
      phase = 'backward';
      const prev = setGradEnabled(false);
      try {
        const g = metaTensor(loss.shape, loss.dtype);
        register(g, 'grad', headBlock);
        walk(loss, g);
      } finally {
        setGradEnabled(prev);
      }
      return 0;
    });
  } finally {
    setMetaSink(prevSink);
    setMetaReleaseSink(prevRelease);
  }
  reap();
  events.push({ t: 'mark', what: 'step-end' });
  return { precision: lowpKind() ? 'bf16' : 'fp32', params, numParams: params.reduce((s, p) => s + p.numel, 0), ops, buffers, events, nBlocks: opts.nBlocks, items: opts.items };
}

/** Backward cost relative to forward: two GEMMs per forward GEMM, and so on (see each op's rule). */
export function backwardFactor(cls: OpClass): number {
  switch (cls) {
    case 'gemm': return 2;
    case 'attention': return 2;
    case 'view': return 0;
    default: return 1.5;
  }
}

function collectNodes(output: Tensor): Node[] {
  const seen = new Set<Node>();
  const stack: Node[] = output.node ? [output.node] : [];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const inp of n.inputs) if (inp.node && !seen.has(inp.node)) stack.push(inp.node);
  }
  return [...seen].sort((a, b) => b.seq - a.seq);
}
