// A rank of the expert-parallel equivalence tests (spawned by test/parallel-ep.test.ts, or
// run alone with EP_MODE=single for the single-process reference). Trains a small MoE GPT
// for EP_STEPS steps of SGD with momentum on a fixed global batch sequence and prints one
// `RESULT {json}` line: the losses and this rank's final parameters with their global
// expert offset.
import { GPT } from '../../src/nn/gpt.js';
import { materialize } from '../../src/nn/materialize.js';
import { denseMoe } from '../../src/nn/moe-config.js';
import type { GptConfig } from '../../src/nn/gpt-config.js';
import { SGD } from '../../src/optim/sgd.js';
import { fromStorage, full } from '../../src/core/tensor.js';
import { scope } from '../../src/core/scope.js';
import { backward } from '../../src/autograd/tape.js';
import { ParallelDims } from '../../src/parallel/parallel-dims.js';
import { ThreadEpComm, type A2aAlgorithm } from '../../src/parallel/expert-parallel-comm.js';
import { ExpertParallel, expertShard, isExpertParam } from '../../src/parallel/expert-parallel.js';
import { initProcessGroup } from '../../src/runtime/init.js';
import { setBlasThreads } from '../../src/backend/blas.js';
import { setKernelThreads } from '../../src/backend/dispatch.js';

const env = process.env;
const steps = Number(env.EP_STEPS ?? 4);
const GB = Number(env.EP_GLOBAL_BATCH ?? 8);
const seed = 4242;
setBlasThreads(1);
setKernelThreads(1);

export function epModelConfig(): GptConfig {
  return {
    nLayer: 2, nHead: 2, dModel: 32, dFF: 64, vocabSize: 64, seqLen: 8, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5,
    moe: { ...denseMoe(), experts: 4, topK: Number(env.EP_TOPK ?? 2), every: 1, dFF: 32, capacityFactor: Number(env.EP_CAPACITY ?? 0), balance: (env.EP_BALANCE ?? 'aux') as 'aux', overflow: (env.EP_OVERFLOW ?? 'drop') as 'drop', zLossCoef: 1e-3, sharedExpert: env.EP_SHARED === '1' },
  };
}

/** Global batch of step s: GB sequences of T+1 tokens from a fixed LCG. */
function batch(s: number, T: number, V: number): { x: Int32Array; y: Int32Array } {
  const x = new Int32Array(GB * T), y = new Int32Array(GB * T);
  let st = (s + 1) * 2654435761 >>> 0;
  const next = () => { st = (Math.imul(st, 1664525) + 1013904223) >>> 0; return st % V; };
  for (let b = 0; b < GB; b++) {
    let prev = next();
    for (let t = 0; t < T; t++) { const cur = (prev * 7 + next() % 3) % V; x[b * T + t] = prev; y[b * T + t] = cur; prev = cur; }
  }
  return { x, y };
}

/**
 * SGD with momentum: its update is linear in the gradient, so the comparison measures the
 * gradients. (AdamW divides by √v: a parameter whose true gradient is zero, such as the
 * attention key bias, turns float-rounding noise into lr-sized steps of random sign.)
 */
function newOptimizer(model: GPT): SGD {
  return new SGD(model.parameters(), { lr: 0.5, momentum: 0.9 });
}

/** Writes the result line and waits until it is flushed (process.exit would cut a large pipe write). */
function emit(result: unknown): Promise<void> {
  return new Promise((resolve) => process.stdout.write('RESULT ' + JSON.stringify(result) + '\n', () => resolve()));
}

function params(model: GPT, expertOffset: (name: string) => number): Record<string, { offset: number; data: number[] }> {
  const out: Record<string, { offset: number; data: number[] }> = {};
  for (const [n, p] of model.namedParameters()) out[n] = { offset: expertOffset(n), data: Array.from(p.data.subarray(p.offset, p.offset + p.size)) };
  return out;
}

async function single(): Promise<void> {
  const cfg = epModelConfig();
  const model = new GPT(cfg, { seed });
  const opt = newOptimizer(model);
  const losses: number[] = [], dropped: number[] = [], moved: number[] = [];
  for (let s = 0; s < steps; s++) {
    const { x, y } = batch(s, cfg.seqLen, cfg.vocabSize);
    losses.push(scope(() => {
      const l = model.loss(fromStorage(x, [GB, cfg.seqLen], 'int32'), fromStorage(y, [GB, cfg.seqLen], 'int32'));
      backward(l);
      return l.item();
    }));
    const st = model.takeMoeStats();
    dropped.push(st.reduce((a, x) => a + x.dropped, 0));
    moved.push(st.reduce((a, x) => a + x.moved, 0));
    opt.step();
    opt.zeroGrad();
  }
  await emit(({ losses, dropped, moved, params: params(model, () => 0) }));
}

async function parallel(): Promise<void> {
  const pg = await initProcessGroup();
  const ep = Number(env.EP_SIZE ?? 2);
  const dims = new ParallelDims({ world: pg.size, dp: pg.size, ep });
  const c = dims.coords(pg.rank);
  const comm = await ThreadEpComm.start(pg);
  try {
    const cfg = epModelConfig();
    const model = new GPT(cfg, { seed, deferInit: true });
    materialize(model, seed, expertShard(c.ep, ep));
    const epp = new ExpertParallel(model, {
      comm, epRanks: dims.groupRanks('ep', pg.rank), edpRanks: dims.groupRanks('edp', pg.rank), a2a: (env.EP_A2A ?? 'flat') as A2aAlgorithm,
    });
    const { dense } = epp.split();
    const dpRanks = dims.groupRanks('dp', pg.rank);
    const opt = newOptimizer(model);
    const B = GB / dims.dp, T = cfg.seqLen;
    const losses: number[] = [], dropped: number[] = [];
    const scalar = comm.shared('scalar', 2) as Float32Array;
    for (let s = 0; s < steps; s++) {
      const g = batch(s, T, cfg.vocabSize);
      const x = g.x.slice(c.dp * B * T, (c.dp + 1) * B * T), y = g.y.slice(c.dp * B * T, (c.dp + 1) * B * T);
      const local = scope(() => {
        const l = model.loss(fromStorage(x, [B, T], 'int32'), fromStorage(y, [B, T], 'int32'));
        backward(l, { grad: full([], 1) });
        return l.item();
      });
      // Dense gradients: mean over the data-parallel group.
      let n = 0;
      for (const [, p] of dense) n += p.size;
      const buf = comm.shared('dense', n) as Float32Array;
      let o = 0;
      for (const [, p] of dense) { buf.set((p.grad!.data as Float32Array).subarray(p.grad!.offset, p.grad!.offset + p.size), o); o += p.size; }
      comm.allReduce(dpRanks, buf, 'sum');
      o = 0;
      for (const [, p] of dense) { const gd = p.grad!.data as Float32Array; for (let i = 0; i < p.size; i++) gd[p.grad!.offset + i] = buf[o + i]! / dims.dp; o += p.size; }
      epp.reduceExpertGrads(dims.dp);
      scalar[0] = local;
      scalar[1] = model.takeMoeStats().reduce((a, st) => a + st.dropped, 0);
      comm.allReduce(dpRanks, scalar, 'sum');
      losses.push(scalar[0]! / dims.dp);
      dropped.push(scalar[1]!);
      opt.step();
      opt.zeroGrad();
    }
    const offsetOf = (name: string) => {
      if (!isExpertParam(name)) return 0;
      const p = model.namedParameters().find(([n]) => n === name)![1];
      return c.ep * p.size;
    };
    await emit(({ rank: pg.rank, ep: c.ep, edp: c.edp, losses, dropped, exchange: epp.stats, params: params(model, offsetOf) }));
  } finally {
    await comm.close();
    await pg.destroy();
  }
}

(env.EP_MODE === 'single' ? single() : parallel()).then(() => process.exit(0), (e: unknown) => {
  console.error(`rank ${env.ATHANOR_RANK ?? 0}: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
