// `athanor plan`: memory per device and time per step for a model × cluster × layout.
import { parseArgs } from '../train/overrides.js';
import { PRESETS, type TrainConfig } from '../train/config.js';
import { configFromArgs } from './cmd-train.js';
import { loadCluster, listClusters, type ClusterSpec } from '../plan/cluster.js';
import { devices, layoutProblem, layoutString, parseLayout, type Layout } from '../plan/layout.js';
import { estimate, tracesRecompute, type Estimate } from '../plan/estimate.js';
import { traceForLayout } from '../plan/models.js';
import { searchLayouts } from '../plan/search.js';
import { calibrate } from '../plan/calibrate.js';
import { epRoutingLoad } from '../plan/ep-routing-load.js';
import { planRecsys } from '../plan/recsys.js';
import { loadRecsysConfig } from '../recsys/recsys-config.js';
import { fmtBytes, layoutFromTrainConfig } from '../train/memory-plan.js';

export const planHelp = `athanor plan --preset NAME|--config FILE --cluster NAME|FILE [--layout K=V,...] [--json] [--search] [--tokens N]
athanor plan --calibrate [--out FILE] [--quick]
  Predicts memory per device and time per step before a run: the model is traced on the
  meta device (its own code, shapes only), the cluster spec supplies measured or published rates.

options:
  --preset NAME    ${Object.keys(PRESETS).join(', ')}
  --config FILE    JSON config merged over the preset (as for train); --KEY=VALUE overrides too
  --cluster NAME   one of clusters/*.json (${listClusters().join(', ') || 'none yet'}) or a path
  --layout SPEC    tp=,pp=,dp=,ep=,zero=0..3,sp=true|false,recompute=none|full,precision=fp32|bf16,
                   offload=none|optimizer|params|disk,shardGroup= (HSDP: ZeRO-3 over groups of this size),
                   mb= (sequences per micro-batch),ga= (micro-batches per step),schedule=1f1b|gpipe|interleaved,vpp=,
                   epLoad= (ep: the busiest rank's received rows over its balanced share, default 1 = balanced routing);
                   unspecified fields come from the config
  --measure-ep-load STEPS  (ep > 1, no epLoad= given) measure epLoad first: train the config's
                   global batch in one process for STEPS steps from its seed, on its data, and take
                   the busiest ep rank's received rows over the balanced share at the worst forward
                   (the run's own routing; for models small enough to train here)
  --search         rank every valid layout that fits by predicted tokens/s (top 5, with why)
  --devices N      device count for --search (default: the layout's, else the whole cluster)
  --tokens N       also print the time (and energy) to train N tokens (default 1e9)
  --json           machine-readable output
  --recsys FILE    plan a recommender (an \`athanor recsys\` config): server memory, LRU rows,
                   lookups/s against the measured server rate, trainer samples/s
  --embedding-params N   with --recsys: embedding servers needed to hold N parameters
  --calibrate      measure this machine (GEMM, kernels, the framework's per-op and pipeline costs,
                   co-running cores, all-reduce, the tensor-parallel path; about a minute when
                   idle) and write clusters/this-machine.json (or --out FILE)`;

const KNOWN = ['preset', 'config', 'cluster', 'layout', 'json', 'search', 'devices', 'tokens', 'calibrate', 'out', 'quick', 'recsys', 'embedding-params', 'measure-ep-load'];

export async function runPlan(argv: string[]): Promise<number> {
  const { flags, positional } = parseArgs(argv, ['json', 'search', 'calibrate', 'quick']);
  if (positional.length) throw new Error(`plan: unexpected argument '${positional[0]}'\n\n${planHelp}`);
  for (const k of Object.keys(flags)) if (!k.includes('.') && !KNOWN.includes(k)) throw new Error(`plan: unknown option --${k}\n\n${planHelp}`);
  if ('calibrate' in flags) {
    const r = await calibrate({ out: flags.out, quick: 'quick' in flags });
    for (const line of r.log) console.log(line);
    console.log(`wrote ${r.file} (${r.seconds.toFixed(1)} s)`);
    return 0;
  }
  if (!flags.cluster) throw new Error(`plan: --cluster is required (one of: ${listClusters().join(', ')})`);
  const cluster = loadCluster(flags.cluster);
  if (flags.recsys !== undefined) return planRecsysCli(flags, cluster);
  const cfg = configFromArgs(flags);
  const layout = parseLayout(flags.layout ?? '', layoutFromTrainConfig(cfg));
  const tokens = flags.tokens !== undefined ? Number(flags.tokens) : 1e9;
  if (!(tokens > 0)) throw new Error(`plan: --tokens must be a positive number, got '${flags.tokens}'`);
  const json = 'json' in flags;
  if ('search' in flags && flags['measure-ep-load'] !== undefined) throw new Error('plan: --measure-ep-load applies to one layout, not --search');
  if ('search' in flags) {
    const n = flags.devices !== undefined ? Number(flags.devices) : flags.layout ? devices(layout) : cluster.nodes.value * cluster.devicesPerNode.value;
    if (!Number.isInteger(n) || n < 1) throw new Error(`plan: --devices must be a positive integer, got '${flags.devices}'`);
    const globalBatch = layout.mb * layout.ga * layout.dp;
    const r = searchLayouts(cfg.model, cluster, { devices: n, globalBatch, precision: layout.precision });
    if (json) { console.log(JSON.stringify({ ...r, ranked: r.ranked.map((x) => ({ ...x.est, why: x.why })) }, null, 2)); return r.ranked.length ? 0 : 1; }
    console.log(`${cfg.preset} on ${cluster.name}: ${n} devices, global batch ${globalBatch} sequences; ${r.considered} layouts considered, ${r.invalid} invalid, ${r.tooBig} do not fit`);
    if (!r.ranked.length) { console.log('no layout fits'); return 1; }
    r.ranked.forEach((x, i) => {
      console.log(`#${i + 1} ${layoutString(x.est.layout)}: ${fmtRate(x.est.tokensPerSec)} tokens/s, MFU ${(100 * x.est.mfu).toFixed(1)}%, ${fmtBytes(x.est.memory.total)}/device`);
      console.log(`    why: ${x.why}`);
    });
    return 0;
  }
  const problem = layoutProblem(layout, cfg.model);
  if (problem) throw new Error(`--layout: ${problem}`);
  if (flags['measure-ep-load'] !== undefined) {
    const steps = Number(flags['measure-ep-load']);
    if (!Number.isInteger(steps) || steps < 1) throw new Error(`plan: --measure-ep-load must be a positive whole number of steps, got '${flags['measure-ep-load']}'`);
    if (layout.ep <= 1) throw new Error('plan: --measure-ep-load needs a layout with ep > 1');
    if (layout.epLoad !== undefined) throw new Error(`plan: --measure-ep-load and epLoad=${layout.epLoad} both give the routing load; keep one`);
    const run: TrainConfig = { ...cfg, train: { ...cfg.train, microBatch: layout.mb, gradAccum: layout.ga } };
    const r = await epRoutingLoad(run, layout.dp, layout.ep, steps);
    layout.epLoad = Math.max(1, r.peak);
    if (!json) console.log(`routing load measured: the busiest ep rank receives ${r.peak.toFixed(3)}× its balanced rows at the worst of ${r.forwards} forwards (mean ${r.mean.toFixed(3)}×), steps 1-${steps} trained in one process → epLoad=${layout.epLoad.toFixed(3)}`);
  }
  const tr = traceForLayout(cfg.model, layout, cluster.allocator);
  const est = estimate(tr, layout, cluster, { seqLen: cfg.model.seqLen, dModel: cfg.model.dModel });
  const nodes = Math.ceil(est.devices / cluster.devicesPerNode.value);
  const secs = tokens / est.tokensPerSec;
  const energy = cluster.powerWattsPerNode ? cluster.powerWattsPerNode.value * nodes * secs : null;
  if (est.devices > cluster.nodes.value * cluster.devicesPerNode.value) est.notes.push(`the layout needs ${est.devices} devices; ${cluster.name} has ${cluster.nodes.value * cluster.devicesPerNode.value}`);
  if (json) {
    console.log(JSON.stringify({ preset: cfg.preset, cluster: cluster.name, layoutSpec: layoutString(layout), ...est, nodes, tokens, secondsToTokens: secs, energyJoules: energy }, null, 2));
    return est.fits ? 0 : 3;
  }
  printEstimate(cfg, cluster, est, nodes, tokens, secs, energy);
  return est.fits ? 0 : 3;
}

const fmtRate = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0));
const fmtT = (s: number): string => (s >= 86400 ? `${(s / 86400).toFixed(1)} days` : s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 1 ? `${s.toFixed(2)} s` : `${(s * 1e3).toFixed(1)} ms`);

function printEstimate(cfg: TrainConfig, c: ClusterSpec, e: Estimate, nodes: number, tokens: number, secs: number, energy: number | null): void {
  const m = e.memory;
  console.log(`${cfg.preset === 'gpt-tiny' && process.argv.includes('--config') ? 'config' : cfg.preset} (${e.params.toLocaleString('en-US')} parameters, traced) on ${c.name}: ${layoutString(e.layout)} = ${e.devices} devices on ${nodes} node(s)`);
  console.log(`memory per device (pipeline stage ${m.stage}): ${fmtBytes(m.total)} of ${fmtBytes(c.device.memoryBytes.value)} → ${e.fits ? 'fits' : 'DOES NOT FIT'}`);
  for (const [k, v] of [['weights', m.weights], ['gradients', m.grads], ['optimizer state', m.optimizer], ['activations (one micro-batch, live peak)', m.activations], ['  held by the exact-size buffer pool', m.activationsPoolHeld],
    ['ZeRO-3 gather buffers (2 units + outer)', m.gatherBuffers], ['pipeline in-flight micro-batches', m.pipelineInFlight], ['communication buffers', m.commBuffers], ['workspace', m.workspace]] as const) {
    console.log(`  ${k.padEnd(42)} ${fmtBytes(v)}`);
  }
  if (m.hostOffload) console.log(`  offloaded to host memory: ${fmtBytes(m.hostOffload)}`);
  if (m.diskOffload) console.log(`  offloaded to disk (master weights + AdamW moments, offload=disk): ${fmtBytes(m.diskOffload)}`);
  const t = e.time;
  console.log(`time per step: ${fmtT(t.step)} (${e.layout.ga} micro-batch(es) of ${e.layout.mb} × ${cfg.model.seqLen} tokens per data-parallel rank)`);
  for (const [k, v] of Object.entries(t.compute).sort((a, b) => b[1] - a[1])) if (v > 0) console.log(`  compute ${k.padEnd(30)} ${fmtT(v)}`);
  for (const [k, v] of Object.entries(t.comm)) console.log(`  comm    ${k.padEnd(30)} ${fmtT(v)}`);
  if (t.hiddenComm > 0) console.log(`  overlapped with backward (hidden)       ${fmtT(t.hiddenComm)}`);
  if (t.bubble > 0) console.log(`  pipeline bubble                         ${fmtT(t.bubble)}`);
  console.log(`  optimizer step                          ${fmtT(t.optimizer)}`);
  console.log(`throughput: ${fmtRate(e.tokensPerSec)} tokens/s, MFU ${(100 * e.mfu).toFixed(1)}% (${(e.modelFlopsPerToken / 1e9).toFixed(3)} GFLOP/token)`);
  console.log(`time to ${tokens.toExponential(2)} tokens: ${fmtT(secs)}${energy !== null ? `, energy ${(energy / 3.6e9).toFixed(1)} MWh at ${c.powerWattsPerNode!.value.toFixed(0)} W/node` : ''}`);
  for (const n of e.notes) console.log(`note: ${n}`);
}

export function describePlan(e: Estimate): string {
  return `${layoutString(e.layout)}: ${fmtBytes(e.memory.total)}/device, ${fmtRate(e.tokensPerSec)} tokens/s`;
}

function planRecsysCli(flags: Record<string, string>, cluster: ClusterSpec): number {
  const cfg = loadRecsysConfig(flags.recsys!);
  const ep = flags['embedding-params'] !== undefined ? Number(flags['embedding-params']) : undefined;
  if (ep !== undefined && !(ep > 0)) throw new Error(`plan: --embedding-params must be a positive number, got '${flags['embedding-params']}'`);
  const p = planRecsys(cfg, cluster, { embeddingParams: ep });
  if ('json' in flags) { console.log(JSON.stringify(p, null, 2)); return 0; }
  console.log(`recommender ${flags.recsys} on ${cluster.name}: ${p.fields} fields × dim ${p.dim}, dense part ${p.denseParams.toLocaleString('en-US')} parameters (traced DLRM)`);
  console.log(`embedding server: ${p.bytesPerRow.toFixed(0)} bytes per resident row (row + optimizer state + index/LRU); LRU keeps ${p.residentRowsPerServer.toLocaleString('en-US')} rows = ${fmtBytes(p.serverBytesEach)} per server`);
  console.log(`addressable embedding parameters: ${p.addressableParams.toExponential(2)}`);
  console.log(`trainers: ${fmtRate(p.trainerSamplesPerSec)} samples/s → ${fmtRate(p.lookupsPerSecDemanded)} row lookups/s demanded` +
    (p.lookupsPerSecCapacity !== null ? `; ${cfg.servers.numShards} server(s) supply ${fmtRate(p.lookupsPerSecCapacity)}/s at the measured rate; ${p.serversForThroughput} server instance(s) needed for throughput` : ''));
  if (p.target) console.log(`to hold ${p.target.embeddingParams.toExponential(2)} parameters: ${p.target.rows.toExponential(2)} rows, ${fmtBytes(p.target.bytes)}${p.target.serversForMemory !== null ? ` → ${p.target.serversForMemory} server instance(s)` : ''}`);
  for (const n of p.notes) console.log(`note: ${n}`);
  return 0;
}
