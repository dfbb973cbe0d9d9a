// Memory per device and time per step of a traced model under a layout on a cluster.
// Everything model-specific comes from the trace (parameters, ops, buffer lifetimes);
// this file only applies the layout (how tp/pp/dp/ZeRO/sp/precision split those) and
// the cluster's rates (roofline per op class, α–β per collective and link class).
// Memory lives in estimate-memory.ts and the communication model in comm-model.ts; both are
// re-exported here, the planner's one entry point.
import type { TraceResult } from './trace.js';
import { backwardFactor } from './trace.js';
import type { ClusterSpec } from './cluster.js';
import { devices, type Layout } from './layout.js';
import { tpRule } from './shard-rules.js';
import { epHelperStall, epRowTerms, epSyncTerms } from './ep-terms.js';
import { tpSyncTerms } from './tp-terms.js';
import { spCollectives, spOpExtra, spSyncTerms, tpRegionOps } from './sp-terms.js';
import { rankActions, scheduleShapeError } from '../parallel/pipeline/schedule.js';
import { attentionEfficiencyFn, gemmRateFn, opRateFor, optimizerSeconds } from './compute-rates.js';
import { pipelineStep } from './pipeline-timeline.js';
import { helperSeconds, layoutCoRun, opFixedSeconds, pipelineActionSeconds } from './overhead-terms.js';
import { elemBytes, estimateMemory, gemmParamsPerStage, isExpertParamName, layoutScales, shardDp, type MemoryEstimate } from './estimate-memory.js';
import { allToAllTime, interpLogLog, linkFor, ringTime } from './comm-model.js';

export { estimateMemory, tracesRecompute, stageOf, stageMap, shardDp, zero3Units, scheduleReplay, inflightMicroBatches, isExpertParamName, type MemoryEstimate, type StageMap } from './estimate-memory.js';
export { allToAllTime, interpLogLog, ringTime } from './comm-model.js';

export interface TimeEstimate {
  compute: Record<string, number>;
  comm: Record<string, number>;
  bubble: number; optimizer: number; exposedComm: number; hiddenComm: number; step: number;
  /** Compute seconds per step of each pipeline rank (its chunks' ops, all micro-batches). */
  stageCompute: number[];
  /** Seconds the busiest device works per step (compute, optimizer, communication's work on its cores; no bubble or waiting): what CPU time per step measures on this machine. */
  busy: number;
}

export interface Estimate {
  layout: Layout;
  devices: number;
  params: number;
  memory: MemoryEstimate;
  fits: boolean;
  time: TimeEstimate;
  tokensPerStep: number;
  tokensPerSec: number;
  modelFlopsPerToken: number;
  mfu: number;
  notes: string[];
}

export function pipelineMessages(l: Layout, r: number): number {
  const v = l.schedule === 'interleaved' ? l.vpp : 1, shape = { kind: l.schedule, p: l.pp, m: l.ga, v };
  if (l.pp <= 1) return 0;
  if (scheduleShapeError(shape)) return 2 * l.ga;
  const last = l.pp * v - 1;
  let n = 0;
  for (const a of rankActions(shape, r)) {
    const vs = a.chunk * l.pp + r;
    n += (vs > 0 ? 1 : 0) + (vs < last ? 1 : 0);
  }
  return n;
}

export function estimate(tr: TraceResult, l: Layout, c: ClusterSpec, o: { seqLen: number; dModel: number; nExperts?: number }): Estimate {
  const notes: string[] = [];
  // Athanor's expert parallelism: its row capacity's terms (ep-terms.ts).
  const epPad = l.ep > 1 && c.allocator === 'athanor-pool' ? epRowTerms(tr, l.epLoad ?? 1) : null;
  if (l.ep > 1) notes.push(`ep: routing load epLoad=${l.epLoad ?? 1} (the busiest rank's received rows over the balanced share; 1 = balanced routing, the trace's assumption)`);
  const L = tr.nBlocks, pp = l.pp, tp = l.tp, dp = l.dp;
  const eb = tr.precision === 'bf16' ? 4 : elemBytes(l.precision);
  const { stageParams, stageExpertParams, totalParams, sharded, allreduceBytes, recomputeAllreduceBytes, allreduceCount, recomputeAllreduceCount, actScale, sm } = layoutScales(tr, l);
  const nativeLowp = !!c.device.peakFlops.bf16;
  const memory = estimateMemory(tr, l, { ...o, allocator: c.allocator, nativeLowp });
  const fits = memory.total <= c.device.memoryBytes.value
    && (memory.hostOffload === 0 || !c.hostMemoryBytesPerNode || memory.hostOffload * c.devicesPerNode.value <= c.hostMemoryBytesPerNode.value);

  // ---- compute time of one micro-batch on the slowest stage ----
  const peak = (l.precision === 'bf16' ? c.device.peakFlops.bf16?.value : undefined) ?? c.device.peakFlops.fp32.value;
  if (l.precision === 'bf16' && !c.device.peakFlops.bf16) notes.push(`${c.name} lists no bf16 peak: fp32 rate used`);
  const bw = c.device.memBandwidth.value;
  // The framework's fixed cost per op and the co-running devices' slowdown (overhead-terms.ts).
  const coRun = layoutCoRun(l, c), helpers = helperSeconds(l, c);
  const stageOps = new Array<number>(pp).fill(0); // traced ops per micro-batch of each pipeline rank (helper threads' busy time)
  const gemmRate = gemmRateFn(c, peak);
  // Athanor's mixed precision runs the ops' 16-bit paths: their own measured rates where calibrated.
  const lowpK = tr.precision === 'bf16' ? c.device.lowpKernels : undefined;
  const classBw = (cls: string): number => lowpK?.rates[cls] ?? c.device.classBandwidth?.rates[cls] ?? bw;
  const attEff = attentionEfficiencyFn(c, !!lowpK);
  // Sequence parallelism as Athanor's trainer runs it, where its tp path is measured (sp-terms.ts).
  const athanorSp = l.sp && tp === 2 && !!c.commCpu?.tpSync;
  const stageCompute: Record<string, number>[] = Array.from({ length: pp }, () => ({}));
  // Per virtual stage (chunk·pp + rank): forward and backward (with recompute) seconds of one micro-batch, for the schedule replay.
  const vsCost = Array.from({ length: pp * sm.v }, () => ({ F: 0, B: 0 }));
  // Athanor's tensor-parallel transforms add tape ops the plain trace has not (sp-terms.ts),
  // priced where the tp path is measured: each runs forward and backward with its fixed costs.
  const athanorTp = tp === 2 && !!c.commCpu?.tpSync;
  const charge = (s: number, key: string, v: number): void => { stageCompute[s]![key] = (stageCompute[s]![key] ?? 0) + v; };
  for (const op of tr.ops) {
    if (athanorTp) {
      const n = tpRegionOps(op, L, l.sp);
      if (n) {
        const s = sm.rank(op.block), vs = vsCost[sm.chunk(op.block) * pp + s]!;
        const f = n * (opFixedSeconds(c, 'forward') + helpers.wall), b = n * (opFixedSeconds(c, 'backward') + helpers.wall);
        // A recomputed op's region ops run forward again (inside backward); their backward is the forward op's.
        charge(s, `${op.phase}:tp region ops`, f);
        if (op.phase === 'forward') charge(s, 'backward:tp region ops', b);
        vs.F += op.phase === 'forward' ? f : 0;
        vs.B += op.phase === 'forward' ? b : f;
        stageOps[s]! += op.phase === 'forward' ? 2 * n : n;
      }
    }
    if (op.cls === 'view') continue;
    const s = sm.rank(op.block);
    const split0 = tp > 1 && (op.params.some((n) => tpRule(n) !== 'replicated' && tpRule(n) !== 'row-bias') || op.ins.some((i) => i >= 0 && sharded.has(i)) || sharded.has(op.out)) ? tp : 1;
    // Sequence parallelism: a block's other ops (norms, residual adds) run on this rank's rows.
    const split = split0 > 1 || !(athanorSp && op.block >= 0 && op.block < L) ? split0 : tp;
    let t: number;
    if (op.cls === 'gemm' && op.dims) {
      // Backward runs dA = G·W (m, k, n, NN) and dW = Gᵀ·X (n, k, m, TN: ops/matmul.ts's flatK
      // path, C = n × k): price each at its own shape and orientation (the TN table's m is the
      // forward's n; priced as (k, n, m), gpt-tiny's k = 128 weight gradients read 15-20% fast).
      // Under tp a column-parallel GEMM has n/tp outputs, a row-parallel one k/tp inputs.
      const rules = op.params.map(tpRule);
      // Under ep a rank's E/ep experts take the rows of all ep ranks: ep× taller blocks.
      // (At least one row: experts that outnumber the rows run single-row GEMMs.)
      const m = op.op === 'groupedMatmul' ? Math.max(1, op.dims[0]! * l.ep) : op.dims[0]!;
      const n = op.dims[1]! / (split > 1 && (rules.includes('col') || rules.includes('vocab')) ? tp : 1);
      const k = op.dims[2]! / (split > 1 && rules.includes('row') ? tp : 1);
      t = op.phase === 'backward'
        ? op.flops / 2 / split / gemmRate(m, k, n, 'gradA') + op.flops / 2 / split / gemmRate(n, k, m, 'gradB')
        : op.flops / split / gemmRate(m, n, k);
    } else if (op.cls === 'attention') {
      // A recomputed forward runs the forward kernel.
      t = op.flops / split / (peak * attEff(op.dims, op.phase === 'backward' ? 'backward' : 'forward'));
    } else if (split > 1 && op.op === 'crossEntropy' && c.device.classBandwidth?.rates.vocabParallelCrossEntropy) {
      // Under tp the loss is the vocab-parallel cross-entropy (plans/gpt.ts), its own kernel.
      t = (op.bytes * actScale) / split / c.device.classBandwidth.rates.vocabParallelCrossEntropy;
    } else if (opRateFor(c, !!lowpK, op.op, op.cls)) {
      // The op's own measured forward and backward rates (forward bytes per second).
      const r = opRateFor(c, !!lowpK, op.op, op.cls)!;
      t = op.phase === 'backward' ? (op.bytes / backwardFactor(op.cls)) * actScale / split / r.bwd : (op.bytes * actScale) / split / r.fwd;
    } else {
      t = (op.bytes * actScale) / split / classBw(op.cls);
    }
    if (op.lowp) {
      // Mixed precision in Athanor: casts of activation operands (read fp32, write 16 bits),
      // and without native 16-bit GEMMs each operand widened back to fp32 (gemm-lowp.ts).
      const fwd = op.phase !== 'backward';
      const casts = (fwd ? op.lowp.fwdCasts : op.lowp.bwdCasts).reduce((a, n) => a + n, 0);
      const widened = nativeLowp ? 0 : (fwd ? op.lowp.fwdOperands : op.lowp.bwdOperands).reduce((a, n) => a + n, 0);
      t += (6 * (casts + widened)) / split / (c.device.classBandwidth?.rates.convert ?? bw);
    }
    if (epPad) t *= epPad.opScale(op); // Athanor's ep: the expert activation runs over the capacity's padding rows
    const opCompute = t * coRun; // the op's own compute, without the fixed per-op costs
    t = opCompute + opFixedSeconds(c, op.phase) + helpers.wall;
    stageOps[s]!++;
    const key = `${op.phase}:${op.cls}`;
    stageCompute[s]![key] = (stageCompute[s]![key] ?? 0) + t;
    vsCost[sm.chunk(op.block) * pp + s]![op.phase === 'forward' ? 'F' : 'B'] += t;
    if (athanorSp) {
      // sp's sequence-axis reorders (sp-terms.ts).
      const x = spOpExtra(op, tr, actScale, c.device.classBandwidth?.rates.sequenceAxisCopy ?? bw);
      if (x.forward) { charge(s, 'forward:sp sequence-axis copies', x.forward); vsCost[sm.chunk(op.block) * pp + s]!.F += x.forward; }
      if (x.backward) { charge(s, 'backward:sp sequence-axis copies', x.backward); vsCost[sm.chunk(op.block) * pp + s]!.B += x.backward; }
    }
  }
  const sum = (r: Record<string, number>): number => Object.values(r).reduce((a, b) => a + b, 0);
  let slow = 0;
  for (let s = 1; s < pp; s++) if (sum(stageCompute[s]!) > sum(stageCompute[slow]!)) slow = s;
  const perMb = stageCompute[slow]!;
  const tMb = sum(perMb);
  const bwdShare = Object.entries(perMb).filter(([k]) => !k.startsWith('forward')).reduce((a, [, v]) => a + v, 0);
  const compute: Record<string, number> = {};
  for (const [k, v] of Object.entries(perMb)) compute[k] = v * l.ga;

  // ---- communication per step ----
  const comm: Record<string, number> = {};
  // Gradients travel in the layout's precision, except under Athanor's mixed precision (fp32 gradients).
  const gradElem = l.precision === 'bf16' && tr.precision !== 'bf16' ? 2 : 4;
  const dpn = c.devicesPerNode.value;
  // CPU time communication takes from the device where it runs on its cores (commCpu,
  // measured with the real transport): the same collectives priced with the CPU α–β.
  const cpuLink = c.commCpu ? { alpha: c.commCpu.alpha.value, beta: c.commCpu.beta.value } : null;
  let commCpu = 0;
  if (tp > 1) {
    const link = linkFor(tp, c, dpn);
    let bytes = 0, count = 0;
    for (const [blk, b] of allreduceBytes) if (sm.rank(blk) === slow) { bytes += 2 * b * actScale; count += 2 * allreduceCount.get(blk)!; }
    if (l.recompute !== 'none') for (const [blk, b] of recomputeAllreduceBytes) if (sm.rank(blk) === slow) { bytes += b * actScale; count += recomputeAllreduceCount.get(blk)!; }
    // Megatron: the forward all-reduces (or sp's reduce-scatter + all-gather, same volume),
    // as many in backward, and the recomputed forward's again; each pays its own latency.
    const extraSteps = Math.max(0, count - 1) * 2 * (tp - 1);
    // Athanor's synchronous tp path where calibrated (tp-terms.ts): its measured wall and CPU per collective, and the ranks' skew.
    const sync0 = tpSyncTerms(c, tp, link.cls === 'intra', count, bytes, tMb);
    // Under sp: its gathers, reduce-scatters, re-gathers and gradient all-reduces instead (sp-terms.ts).
    const spSync = sync0 && l.sp ? spSyncTerms(c, tp, link.cls === 'intra', spCollectives(tr, (b) => sm.rank(b) === slow, actScale)) : null;
    const sync = sync0 && spSync ? { ...sync0, wall: spSync.wall, cpu: spSync.cpu } : sync0;
    comm[`tp allreduce (${link.cls})`] = l.ga * (sync ? sync.wall : ringTime('allreduce', bytes, tp, link) + extraSteps * link.alpha);
    if (sync) comm['tp rank skew at the collectives'] = l.ga * sync.skew;
    const table = tp === 2 && count > 0 ? c.commCpu?.allReduce2?.points : undefined;
    if (sync) commCpu += l.ga * sync.cpu;
    else if (table) commCpu += l.ga * count * interpLogLog(table, bytes / count);
    else if (cpuLink) commCpu += l.ga * (ringTime('allreduce', bytes, tp, cpuLink) + extraSteps * cpuLink.alpha);
  }
  let ppMessage = 0, ppMessageCpu = 0;
  if (pp > 1) {
    const link = linkFor(tp * dp * 2, c, dpn);
    const boundary = l.mb * o.seqLen * o.dModel * eb / (l.sp ? tp : 1);
    // Messages (sends + receives) of the busiest pipeline rank per step, from the schedule:
    // 2 per micro-batch for GPipe and 1F1B, more for interleaved (every chunk boundary).
    const msgs = Math.max(...Array.from({ length: pp }, (_, r) => pipelineMessages(l, r)));
    comm[`pp send/recv (${link.cls})`] = msgs * (link.alpha + boundary / link.beta);
    ppMessage = link.alpha + boundary / link.beta;
    ppMessageCpu = cpuLink ? cpuLink.alpha + boundary / cpuLink.beta : 0;
    if (cpuLink) commCpu += msgs * (cpuLink.alpha + boundary / cpuLink.beta);
  }
  let dpTime = 0;
  if (dp > 1) {
    const gradBytes = stageParams[slow]! * gradElem;
    // HSDP: ZeRO-3's gathers and reduce-scatters stay inside the shard group (S neighbouring
    // dp ranks); each shard gradient is then all-reduced over the dp/S replica group.
    const S = shardDp(l);
    const link = linkFor(tp * S, c, dpn);
    const dpRing = (lk: { alpha: number; beta: number }): number => (l.zero >= 2 ? ringTime('reducescatter', gradBytes, S, lk) + (l.zero >= 3 ? 0 : ringTime('allgather', gradBytes, S, lk)) : ringTime('allreduce', gradBytes, S, lk));
    dpTime = dpRing(link);
    if (cpuLink) commCpu += dpRing(cpuLink);
    comm[`dp gradients${S < dp ? ` over shardGroup=${S}` : ''} (${link.cls})`] = dpTime;
    if (S < dp) {
      const rlink = linkFor(tp * dp, c, dpn);
      const r = ringTime('allreduce', gradBytes / S, dp / S, rlink);
      if (cpuLink) commCpu += ringTime('allreduce', gradBytes / S, dp / S, cpuLink);
      comm[`dp replica all-reduce over ${dp / S} groups (${rlink.cls})`] = r;
      dpTime += r;
    }
    if (l.zero >= 3) {
      // Each unit gathered for its forward and again for its recomputed backward.
      const g = 2 * l.ga * ringTime('allgather', stageParams[slow]! * gradElem, S, link);
      if (cpuLink) commCpu += 2 * l.ga * ringTime('allgather', stageParams[slow]! * gradElem, S, cpuLink);
      comm[`zero-3 parameter gathers (${link.cls})`] = g;
      dpTime += g;
    }
  }
  if (l.ep > 1) {
    // Dispatch and combine in forward, their transposes in backward: 4 all-to-alls per MoE
    // layer per micro-batch (MoE blocks are never recomputed, see nn/gpt.ts).
    const layers = tr.ops.filter((op) => op.op === 'moeDispatch' && op.phase === 'forward' && sm.rank(op.block) === slow);
    // The busiest rank (epLoad× its balanced rows, ep-terms.ts) paces every exchange.
    const bytes = (l.epLoad ?? 1) * layers.reduce((a, op) => a + tr.buffers[op.out]!.bytes * actScale, 0) / Math.max(1, layers.length);
    const a2a = allToAllTime(bytes, l, c);
    // Athanor's synchronous exchange where calibrated (ep-terms.ts): its measured wall and CPU per exchange (the row counts' too), and the ranks' skew.
    // The counts exchange sends one int32 per expert of the layer (the experts' leading dimension).
    const experts = tr.params.find((p) => isExpertParamName(p.name))?.shape[0] ?? l.ep;
    const epSync = epSyncTerms(c, l.ep, a2a.cls === 'intra', layers.length, bytes, 4 * experts, tMb);
    comm[`ep all-to-all (${l.a2a}, ${a2a.cls})`] = l.ga * (epSync ? epSync.wall : 4 * layers.length * a2a.time);
    if (epSync && helpers.wall > 0) comm["ep: other ranks' helper threads at the exchanges"] = l.ga * epHelperStall(l.ep, stageOps[slow]!, helpers.wall);
    if (epSync) { comm['ep rank skew at the exchanges'] = l.ga * epSync.skew; commCpu += l.ga * epSync.cpu; }
    else if (cpuLink) {
      const onCpu: ClusterSpec = { ...c, network: { intra: { alpha: c.commCpu!.alpha, beta: c.commCpu!.beta }, inter: { alpha: c.commCpu!.alpha, beta: c.commCpu!.beta } } };
      commCpu += 4 * layers.length * l.ga * allToAllTime(bytes, l, onCpu).time;
    }
    // Expert gradients: all-reduced over the expert-data-parallel group (strided over dp).
    const edp = dp / l.ep;
    if (edp > 1) {
      const link = linkFor(tp * dp, c, dpn);
      const eBytes = stageExpertParams[slow]! * gradElem;
      const eRing = (lk: { alpha: number; beta: number }): number => (l.zero >= 2 ? ringTime('reducescatter', eBytes, edp, lk) + ringTime('allgather', eBytes, edp, lk) : ringTime('allreduce', eBytes, edp, lk));
      const te = eRing(link);
      if (cpuLink) commCpu += eRing(cpuLink);
      comm[`dp expert gradients over edp=${edp} (${link.cls})`] = te;
      dpTime += te;
    }
  }
  // Gradient buckets are reduced on a communication thread during the last micro-batch's backward.
  const hiddenComm = Math.min(dpTime, bwdShare * 0.9);
  const exposedDp = dpTime - hiddenComm;
  const otherComm = Object.entries(comm).filter(([k]) => !k.startsWith('dp') && !k.startsWith('zero')).reduce((a, [, v]) => a + v, 0);
  // The pipeline: the schedule's own action lists replayed with each virtual stage's costs
  // (pipeline-timeline.ts), so the bubble includes stage imbalance and dependency waits.
  const ppKey = Object.keys(comm).find((key) => key.startsWith('pp send/recv'));
  const pipe = pp > 1 ? pipelineStep(l, vsCost, (otherComm - (ppKey ? comm[ppKey]! : 0)) / l.ga, tMb, ppMessage, ppMessageCpu, pipelineActionSeconds(c)) : null;
  const bubble = pipe ? pipe.bubble : pp > 1 ? ((pp - 1) / (l.schedule === 'interleaved' ? l.vpp : 1)) * (tMb + otherComm / l.ga) : 0;
  // AdamW touches its shard's weights, gradients and both moments (read + write): memory-bound.
  const shard = stageParams[slow]! / (l.zero >= 1 ? shardDp(l) : 1) + stageExpertParams[slow]! / (l.zero >= 1 && c.allocator !== 'athanor-pool' ? dp / l.ep : 1);
  // Athanor's mixed precision remakes the 16-bit GEMM weight copies once per step.
  const lowpCopyTime = tr.precision === 'bf16' ? (6 * gemmParamsPerStage(tr, l)[slow]!) / (c.device.classBandwidth?.rates.convert ?? bw) : 0;
  // offload=disk streams 12 bytes per shard element in and 12 out through the page cache
  // (offload-optimizer.ts), overlapped with the update: priced at memory bandwidth.
  const offloadTime = l.offload === 'disk' ? (shard * 24) / bw : l.offload !== 'none' ? (shard * 16) / c.network.intra.beta.value : 0;
  const optimizer = (optimizerSeconds(c, shard) + lowpCopyTime) * coRun + offloadTime;
  // Where communication runs on the compute cores (a CPU device), overlap hides the wait
  // but not the communication thread's own work on the core.
  const commOnDevice = (c.commComputeShare?.value ?? 0) * hiddenComm;
  const step = (pipe ? pipe.makespan : l.ga * tMb + otherComm + bubble) + exposedDp + commOnDevice + optimizer;
  // What the busiest device works per step (no bubble, no waiting): compute, optimizer, and
  // communication's own CPU work where it runs on the device's cores (measured α–β, else the
  // commComputeShare of its time).
  const allComm = Object.values(comm).reduce((a, b) => a + b, 0);
  // Plus the runtime's helper threads (V8's GC workers) beside the main thread's work (overhead-terms.ts).
  const busy = l.ga * (tMb + stageOps[slow]! * helpers.busy) + optimizer + (cpuLink ? commCpu : (c.commComputeShare?.value ?? 0) * allComm);

  const tokensPerStep = l.mb * l.ga * dp * o.seqLen;
  const tokensPerSec = tokensPerStep / step;
  // Model FLOPs per token: the traced forward (matmuls and attention) times 3, no recomputation.
  const fwd = tr.ops.filter((op) => op.phase === 'forward' && (op.cls === 'gemm' || op.cls === 'attention')).reduce((a, op) => a + op.flops, 0);
  const modelFlopsPerToken = (3 * fwd) / tr.items;
  const mfu = (modelFlopsPerToken * tokensPerSec) / (devices(l) * peak);
  return {
    layout: l, devices: devices(l), params: totalParams, memory, fits,
    time: { compute, comm, bubble, optimizer, exposedComm: otherComm + exposedDp + commOnDevice, hiddenComm: hiddenComm - commOnDevice, step, busy, stageCompute: stageCompute.map((r) => l.ga * sum(r)) },
    tokensPerStep, tokensPerSec, modelFlopsPerToken, mfu, notes,
  };
}
