// Rank side of test/parallel-zero3-memory.test.ts: a GPT built on the meta device,
// fully sharded over the data-parallel group, trained 3 steps (2 micro-batches each, plus
// an evaluation forward); reports the data-parallel wrapper's measured memory and what
// parameter storage exists after each phase.
import type { ProcessGroup } from '../../src/runtime/init.js';
import { CommThread } from '../../src/runtime/comm-thread.js';
import { GPT } from '../../src/nn/gpt.js';
import type { GptConfig } from '../../src/nn/gpt-config.js';
import { applyDataParallel } from '../../src/parallel/plans/gpt.js';
import { newAdamW } from '../../src/train/optim-setup.js';
import { presetConfig } from '../../src/train/config.js';
import { accumulationSchedule, type MicroBatch } from '../../src/train/step-schedule.js';

export const ZERO3_MEMORY_MODEL: GptConfig = {
  nLayer: 4, nHead: 2, dModel: 32, dFF: 128, vocabSize: 96, seqLen: 8, tieEmbeddings: true, positions: 'learned', dropout: 0, lnEps: 1e-5,
};

/** Elements of every parameter that has storage right now (ZeRO-3: only gathered units). */
function heldElements(model: GPT): number {
  let n = 0;
  for (const [, p] of model.namedParameters()) if (p.box.data) n += p.size;
  return n;
}

export async function zero3Memory(pg: ProcessGroup): Promise<Record<string, unknown>> {
  const ct = await CommThread.start(pg, { prefix: 'athanor/zero3-mem' });
  try {
    const comm = ct.newGroup([...Array(pg.size).keys()], 'dp');
    const seed = 11;
    const model = new GPT(ZERO3_MEMORY_MODEL, { seed, recompute: false, deferInit: true });
    const dp = applyDataParallel(model, comm, pg.rank, pg.size, { zero: 3, bucketMB: 1, deterministic: true, seed, prefetch: process.env.ZERO3_PREFETCH !== '0' });
    const heldAfterBuild = heldElements(model);
    const optim = dp.buildOptimizer({ makeAdamW: (ps, relocate) => newAdamW(ps, presetConfig('gpt-tiny').optim, relocate) });
    const sched = accumulationSchedule(model, {
      onGradReady: dp.onGradReady, beforeForward: (last) => dp.beforeForward(last), afterEval: () => dp.afterEval(), meanLoss: async (x) => x,
    });
    const { seqLen: T, vocabSize: V } = ZERO3_MEMORY_MODEL;
    const batch = (salt: number): MicroBatch => {
      const x = new Int32Array(2 * T), y = new Int32Array(2 * T);
      for (let i = 0; i < x.length; i++) { x[i] = (i * 7 + salt * 13 + pg.rank * 5) % V; y[i] = (i * 11 + salt * 3 + pg.rank) % V; }
      return { x, y, rows: 2, T };
    };
    const losses: number[] = [];
    const heldAfterStep: number[] = [];
    for (let s = 0; s < 3; s++) {
      losses.push(await sched.runStep([batch(2 * s), batch(2 * s + 1)]));
      await dp.reduceGrads();
      await optim.step(1e-3, 1);
      heldAfterStep.push(heldElements(model));
    }
    await sched.evalLoss(batch(99));
    const report = dp.memoryReport();
    return { rank: pg.rank, world: pg.size, heldAfterBuild, heldAfterStep, heldAfterEval: heldElements(model), losses, report, describe: dp.describe() };
  } finally {
    await ct.close();
  }
}
