// The seed systems reproduced on paper: each published run's model (traced on the meta
// device) and layout on its cluster spec (clusters/*.json), the planner's prediction
// beside the published figure, with the error. Prints a markdown table (and JSON with --json).
//
//   node dist/bench/plan-seeds.js [--json]
import { presetConfig } from '../src/train/config.js';
import type { GptConfig } from '../src/nn/gpt-config.js';
import { loadCluster, type ClusterSpec } from '../src/plan/cluster.js';
import { estimate, type Estimate } from '../src/plan/estimate.js';
import { parseLayout, layoutString } from '../src/plan/layout.js';
import { traceGpt } from '../src/plan/models.js';
import { searchLayouts } from '../src/plan/search.js';
import { planRecsys } from '../src/plan/recsys.js';
import { loadRecsysConfig } from '../src/recsys/recsys-config.js';
import { projectRoot } from '../src/backend/native.js';
import { join } from 'node:path';

export interface SeedRow { system: string; quantity: string; published: string; predicted: string; ratio: number | null; note: string }

const GiB = 2 ** 30;
const fmt = (x: number, d = 1): string => x.toLocaleString('en-US', { maximumFractionDigits: d });

function run(model: GptConfig, cluster: ClusterSpec, layout: string): Estimate {
  const l = parseLayout(layout);
  return estimate(traceGpt(model, { microBatch: l.mb, recompute: l.recompute === 'full' }), l, cluster, { seqLen: model.seqLen, dModel: model.dModel });
}

/** Hardware FLOPs per token: forward × 3, plus the recomputed forward when blocks are recomputed (what Megatron's papers count). */
const hwFlopsPerToken = (e: Estimate): number => e.modelFlopsPerToken * (e.layout.recompute === 'full' ? 4 / 3 : 1);

export function seedRows(): SeedRow[] {
  const rows: SeedRow[] = [];

  // Fugaku-LLM 13B: TP6 × PP8 × DP288 on 13,824 nodes, micro-batch 1, global batch 2016 (7 micro-batches per step).
  {
    const c = loadCluster('fugaku');
    const e = run(presetConfig('fugaku-13b').model, c, 'tp=6,pp=8,dp=288,mb=1,ga=7,recompute=full,precision=bf16');
    rows.push({ system: 'Fugaku-LLM 13B', quantity: 'memory per node (TP6×PP8×DP288)', published: 'fits in 32 GiB HBM2 (it ran)', predicted: `${fmt(e.memory.total / GiB)} GiB`, ratio: null, note: e.fits ? 'fits' : 'does NOT fit' });
    rows.push({ system: 'Fugaku-LLM 13B', quantity: 'tokens/s; days for 380B tokens', published: 'no duration found in public sources', predicted: `${fmt(e.tokensPerSec / 1e3, 0)}k tokens/s; ${fmt(380e9 / e.tokensPerSec / 86400)} days`, ratio: null, note: `MFU ${fmt(100 * e.mfu)}% of the FP16 peak; bubble ${fmt(100 * e.time.bubble / e.time.step, 0)}% (7 micro-batches for 8 stages)` });
  }

  // Megatron-LM's 1T GPT (the 1,008B shape) on 3,072 A100 (Selene, DGX A100 nodes): published 502 PFLOP/s.
  const m1t: GptConfig = { nLayer: 128, nHead: 160, dModel: 25600, dFF: 102400, vocabSize: 51200, seqLen: 2048, tieEmbeddings: true, positions: 'learned', dropout: 0, lnEps: 1e-5 };
  {
    const c = loadCluster('asc-8gpu');
    const e = run(m1t, c, 'tp=8,pp=64,dp=6,mb=1,ga=512,recompute=full,precision=bf16');
    const pf = (hwFlopsPerToken(e) * e.tokensPerSec) / 1e15;
    rows.push({ system: '1T GPT (Megatron shape) on 3,072 A100', quantity: 'aggregate PFLOP/s (hardware FLOPs, recompute counted)', published: '502 PFLOP/s (Narayanan et al. 2021, arXiv 2104.04473)', predicted: `${fmt(pf, 0)} PFLOP/s`, ratio: pf / 502, note: `memory ${fmt(e.memory.total / GiB)} GiB of 80 GB per GPU; MFU ${fmt(100 * e.mfu)}% without recompute FLOPs` });
  }
  // Aurora 1T: the same model on Aurora; no published training throughput.
  {
    const c = loadCluster('aurora');
    const e = run(m1t, c, 'tp=6,pp=64,dp=16,mb=1,ga=512,recompute=full,precision=bf16');
    rows.push({ system: 'Aurora 1T (Megatron 1T shape)', quantity: 'memory per GPU; tokens/s on 6,144 GPUs (TP6×PP64×DP16)', published: 'no training figures published (announced model)', predicted: `${fmt(e.memory.total / GiB)} GiB; ${fmt(e.tokensPerSec / 1e3, 1)}k tokens/s; ${fmt(1e12 / e.tokensPerSec / 86400)} days per 1T tokens`, ratio: null, note: `${e.fits ? 'fits' : 'does NOT fit'} in 128 GiB; MFU ${fmt(100 * e.mfu)}% of ALCF's measured BF16 GEMM rate` });
  }

  // Yuan 4.7B at ASC-style scale: best layout on one 8-GPU node, global batch 256 sequences.
  {
    const c = loadCluster('asc-8gpu');
    const r = searchLayouts(presetConfig('yuan-4.7b').model, c, { devices: 8, globalBatch: 256, precision: 'bf16', top: 1 });
    const best = r.ranked[0];
    rows.push({ system: 'Yuan 4.7B (ASC22 task)', quantity: 'time for 1B tokens on 8 A100', published: 'no published time found', predicted: best ? `${fmt(1e9 / best.est.tokensPerSec / 3600)} h with ${layoutString(best.est.layout)}` : 'no layout fits', ratio: null, note: best ? `${fmt(best.est.tokensPerSec / 1e3, 1)}k tokens/s, MFU ${fmt(100 * best.est.mfu)}%, ${fmt(best.est.memory.total / GiB)} GiB/GPU` : '' });
  }

  // BaGuaLu: MoE; the MoE-GPT model is not on this branch, so only the published parameter counts are used.
  {
    const c = loadCluster('oceanlight');
    const nodes = 96000;
    for (const params of [14.5e12, 174e12]) {
      const perNode = (params * 16) / nodes; // mixed precision, every parameter sharded once (experts over ep, ZeRO over the rest)
      rows.push({ system: `BaGuaLu ${params / 1e12}T MoE`, quantity: 'model-state memory per node (96,000 nodes, fully sharded, 16 B/param)', published: 'ran (14.5T) / trainable (174T) in 96 GB per node', predicted: `${fmt(perNode / GiB)} GiB of ${fmt((6 * c.device.memoryBytes.value) / GiB, 0)} GiB`, ratio: null, note: 'NOT traced: MoE-GPT is not on this branch; model states only, activations not included' });
    }
    const peak = nodes * 6 * c.device.peakFlops.bf16!.value;
    const pred = peak * c.device.gemmEfficiency.value;
    rows.push({ system: 'BaGuaLu 14.5T MoE', quantity: 'sustained mixed-precision FLOP/s', published: '> 1 EFLOPS (Ma et al., PPoPP 2022)', predicted: `${fmt(pred / 1e18, 2)} EFLOPS (GEMM-bound upper estimate; peak ${fmt(peak / 1e18, 2)})`, ratio: pred / 1.0e18, note: 'upper bound from peak × assumed GEMM efficiency; see the notes for why it is > 2× the published figure' });
  }

  // PERSIA 100T: embedding servers to hold 10^14 parameters and trainer throughput.
  {
    const c = loadCluster('persia-cloud');
    const cfg = loadRecsysConfig(join(projectRoot(), 'examples', 'plan', 'persia-dlrm.json'));
    const p = planRecsys(cfg, c, { embeddingParams: 1e14 });
    rows.push({ system: 'PERSIA 100T', quantity: 'embedding server instances to hold 10^14 parameters resident', published: '100 CPU instances (52 cores, 480 GB)', predicted: `${p.target!.serversForMemory} instances (${fmt(p.target!.bytes / 2 ** 40, 0)} TiB with Adagrad state)`, ratio: p.target!.serversForMemory! / 100, note: '100 × 480 GB = 48 TB cannot hold 10^14 fp32 parameters (400 TB): see notes' });
    rows.push({ system: 'PERSIA 100T', quantity: 'dense trainer samples/s on 64 V100; lookups/s vs measured server rate', published: 'no samples/s figure retrieved', predicted: `${fmt(p.trainerSamplesPerSec / 1e6, 2)}M samples/s; ${fmt(p.lookupsPerSecDemanded / 1e6, 1)}M lookups/s vs ${fmt((p.lookupsPerSecCapacity ?? 0) / 1e6, 0)}M/s from 100 single-core Athanor servers`, ratio: null, note: `server rate measured here (2.47M rows/core-s, dim 16); ${p.serversForThroughput} 52-core instance(s) would serve the lookups` });
  }
  return rows;
}

if (process.argv[1] && /plan-seeds\.js$/.test(process.argv[1])) {
  const rows = seedRows();
  if (process.argv.includes('--json')) console.log(JSON.stringify(rows, null, 2));
  else {
    console.log('| system | quantity | published | Athanor plan | predicted / published | note |');
    console.log('|---|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.system} | ${r.quantity} | ${r.published} | ${r.predicted} | ${r.ratio === null ? '–' : fmt(r.ratio, 2)} | ${r.note} |`);
  }
}
