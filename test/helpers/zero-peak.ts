// Rank side of test/parallel-zero3-peak.test.ts: a model whose parameters dominate its
// memory (8 blocks of d512, vocabulary 8192, seq 64, micro-batch 1), data parallel over
// every rank at ZeRO-0 or ZeRO-3 (ZERO_STAGE), trained 3 steps; reports the peak of the
// process's array-buffer bytes over those steps (array-buffer-peak.ts) and the layer's
// own accounting. SHARD_GROUP=S (with ZERO_STAGE=3) runs HSDP: ZeRO-3 inside groups of S
// neighbouring ranks, shard gradients all-reduced over the replica groups (hsdp.ts).
import type { ProcessGroup } from '../../src/runtime/init.js';
import { CommThread } from '../../src/runtime/comm-thread.js';
import { hsdpGroups } from '../../src/parallel/hsdp.js';
import { GPT } from '../../src/nn/gpt.js';
import type { GptConfig } from '../../src/nn/gpt-config.js';
import { applyDataParallel } from '../../src/parallel/plans/gpt.js';
import { newAdamW } from '../../src/train/optim-setup.js';
import { presetConfig } from '../../src/train/config.js';
import { accumulationSchedule, type MicroBatch } from '../../src/train/step-schedule.js';
import { collectGarbage } from '../../src/core/collect-garbage.js';
import { trackArrayBufferPeak, resetArrayBufferPeak, arrayBufferPeak, sampleArrayBuffers } from '../../src/core/array-buffer-peak.js';

export const ZERO_PEAK_MODEL: GptConfig = {
  nLayer: 8, nHead: 8, dModel: 512, dFF: 2048, vocabSize: 8192, seqLen: 64, tieEmbeddings: false, positions: 'learned', dropout: 0, lnEps: 1e-5,
};

export async function zeroPeak(pg: ProcessGroup): Promise<Record<string, unknown>> {
  const zero = Number(process.env.ZERO_STAGE ?? '3') as 0 | 3;
  const ct = await CommThread.start(pg, { prefix: 'athanor/zero-peak' });
  try {
    const all = [...Array(pg.size).keys()];
    const sg = Number(process.env.SHARD_GROUP ?? '0');
    const hsdp = zero === 3 && sg > 0 && sg < pg.size ? hsdpGroups(ct, all, pg.rank, sg) : null;
    const comm = hsdp ? hsdp.shard.comm : ct.newGroup(all, 'dp');
    trackArrayBufferPeak();
    const seed = 5;
    // ZeRO-0 builds the model in full and copies it into the flat buffer; ZeRO-3 builds it on
    // the meta device and materializes the shard only (as `athanor train` does).
    const model = new GPT(ZERO_PEAK_MODEL, { seed, recompute: false, deferInit: zero === 3 });
    const dp = hsdp
      ? applyDataParallel(model, comm, hsdp.shard.rank, hsdp.shard.size, { zero, bucketMB: 25, deterministic: true, seed, replica: hsdp.replica })
      : applyDataParallel(model, comm, pg.rank, pg.size, { zero, bucketMB: 25, deterministic: true, seed });
    const optim = dp.buildOptimizer({ makeAdamW: (ps, relocate) => newAdamW(ps, presetConfig('gpt-small').optim, relocate) });
    const sched = accumulationSchedule(model, {
      onGradReady: dp.onGradReady, beforeForward: (last) => dp.beforeForward(last), afterEval: () => dp.afterEval(), meanLoss: async (x) => x,
    });
    // What set-up left for the collector (ZeRO-0: the model's first parameter storage, now
    // copied into the flat buffer) is not training state: collect it, then measure 3 steps.
    collectGarbage();
    resetArrayBufferPeak();
    const start = sampleArrayBuffers();
    const { seqLen: T, vocabSize: V } = ZERO_PEAK_MODEL;
    const batch = (salt: number): MicroBatch => {
      const x = new Int32Array(T), y = new Int32Array(T);
      for (let i = 0; i < T; i++) { x[i] = (i * 7919 + salt * 131 + pg.rank * 17) % V; y[i] = (i * 104729 + salt * 31 + pg.rank) % V; }
      return { x, y, rows: 1, T };
    };
    const losses: number[] = [];
    for (let s = 0; s < 3; s++) {
      losses.push(await sched.runStep([batch(s)]));
      sampleArrayBuffers();
      await dp.reduceGrads();
      await optim.step(1e-4, 1);
      sampleArrayBuffers();
    }
    return { rank: pg.rank, zero, start, peak: arrayBufferPeak(), losses, report: dp.memoryReport() };
  } finally {
    await ct.close();
  }
}
