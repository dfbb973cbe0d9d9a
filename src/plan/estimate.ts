// Memory per device and time per step of a traced model under a layout on a cluster.
// Everything model-specific comes from the trace (parameters, ops, buffer lifetimes);
// this file only applies the layout (how tp/pp/dp/ZeRO/sp/precision split those) and
// the cluster's rates (roofline per op class, α–β per collective and link class).
import type { TraceResult, TracedBuffer, MemEvent } from './trace.js';
import { backwardFactor } from './trace.js';
import type { ClusterSpec } from './cluster.js';
import { devices, type Layout } from './layout.js';
import { tpRule } from './shard-rules.js';
import { epHelperStall, epRowTerms, epStagingBytes, epSyncTerms } from './ep-terms.js';
import { tpSyncTerms } from './tp-terms.js';
import { spCollectives, spOpExtra, spSyncTerms, tpRegionOps } from './sp-terms.js';
import { rankActions, scheduleShapeError } from '../parallel/pipeline/schedule.js';
import { DEFAULT_CHUNK as OFFLOAD_CHUNK } from '../parallel/offload-store.js';
import { attentionEfficiencyFn, gemmRateFn, opRateFor, optimizerSeconds } from './compute-rates.js';
import { pipelineStep } from './pipeline-timeline.js';
import { helperSeconds, layoutCoRun, opFixedSeconds, pipelineActionSeconds } from './overhead-terms.js';

export interface MemoryEstimate {
  weights: number; grads: number; optimizer: number; activations: number; pipelineInFlight: number;
  /** Activation bytes Athanor's exact-size buffer pool holds at its high-water mark (>= activations). */
  activationsPoolHeld: number;
  commBuffers: number; workspace: number; total: number; hostOffload: number;
  /**
   * Athanor's ZeRO-3 gather buffers (in total, apart from weights): the computing and the
   * prefetched unit (2U) plus the outer unit (O), as DataParallel.describe() reports them.
   */
  gatherBuffers: number;
  /** offload=disk: bytes of optimizer state (fp32 master + AdamW moments) kept in the rank's offload file. */
  diskOffload: number;
  /** The pipeline stage the figures are for (the largest). */
  stage: number;
}

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

const elemBytes = (p: Layout['precision']): number => (p === 'bf16' ? 2 : 4);

/**
 * Whether the step is traced with block recomputation: asked for by the layout, or
 * implied by Athanor's ZeRO-3 (zero3.ts wraps every block in a recomputation node).
 */
export function tracesRecompute(l: Layout, allocator?: ClusterSpec['allocator']): boolean {
  return l.recompute === 'full' || (allocator === 'athanor-pool' && l.zero >= 3 && l.dp > 1);
}

/** Blocks of pipeline stage s split evenly (block -1 = embeddings go to stage 0, block L = head to the last): the fallback where the trace has no partitioner. */
export function stageOf(block: number, nBlocks: number, pp: number): number {
  if (block < 0) return 0;
  if (block >= nBlocks) return pp - 1;
  return Math.min(pp - 1, Math.floor((block * pp) / nBlocks));
}

/** Where each traced block runs under the layout's pipeline: its rank and its chunk (virtual stage = chunk·pp + rank). */
export interface StageMap { v: number; rank(block: number): number; chunk(block: number): number; parts: [number, number][] }

/**
 * The pipeline placement the trainer uses: the model's own partitioner (tr.stagePartition,
 * parallel/plans/gpt-pipeline.ts, which balances layers against the embedding and the
 * head), else an even split. Virtual stage vs runs on rank vs mod pp as chunk ⌊vs / pp⌋.
 */
export function stageMap(tr: TraceResult, l: Layout): StageMap {
  const pp = l.pp, v = l.schedule === 'interleaved' ? l.vpp : 1, S = pp * v, L = tr.nBlocks;
  let parts: [number, number][] = S > 1 && tr.stagePartition ? tr.stagePartition(pp, v) : [];
  if (parts.length !== S) {
    parts = [];
    for (let vs = 0; vs < S; vs++) { const lo = Math.floor((vs * L) / S), hi = Math.floor(((vs + 1) * L) / S); parts.push([lo, hi]); }
  }
  const vsOf = (block: number): number => {
    if (S === 1 || block < 0) return 0;
    if (block >= L) return S - 1;
    const i = parts.findIndex(([lo, hi]) => block >= lo && block < hi);
    return i < 0 ? S - 1 : i;
  };
  return { v, parts, rank: (b) => vsOf(b) % pp, chunk: (b) => Math.floor(vsOf(b) / pp) };
}

/**
 * Which activation buffers are split over tp: outputs of column-parallel GEMMs and
 * everything computed from them until a row-parallel GEMM (whose output is all-reduced).
 * Forward and recompute ops are both walked: a recomputed block repeats its all-reduces.
 */
function tpSharded(tr: TraceResult): { sharded: Set<number>; allreduceBytes: Map<number, number>; recomputeAllreduceBytes: Map<number, number>; allreduceCount: Map<number, number>; recomputeAllreduceCount: Map<number, number> } {
  const sharded = new Set<number>();
  const allreduceBytes = new Map<number, number>(); // block → bytes all-reduced per forward
  const recomputeAllreduceBytes = new Map<number, number>();
  const allreduceCount = new Map<number, number>(); // block → all-reduces per forward
  const recomputeAllreduceCount = new Map<number, number>();
  for (const o of tr.ops) {
    if ((o.phase !== 'forward' && o.phase !== 'recompute') || o.out < 0) continue;
    const rules = o.params.map(tpRule);
    if (rules.includes('row') || (o.op === 'embedding' && rules.includes('vocab'))) {
      const m = o.phase === 'forward' ? allreduceBytes : recomputeAllreduceBytes;
      m.set(o.block, (m.get(o.block) ?? 0) + tr.buffers[o.out]!.bytes);
      const k = o.phase === 'forward' ? allreduceCount : recomputeAllreduceCount;
      k.set(o.block, (k.get(o.block) ?? 0) + 1);
      continue;
    }
    if (rules.includes('col') || rules.includes('vocab') || o.ins.some((i) => i >= 0 && sharded.has(i))) sharded.add(o.out);
  }
  return { sharded, allreduceBytes, recomputeAllreduceBytes, allreduceCount, recomputeAllreduceCount };
}

/**
 * Replays allocation events with a per-buffer scale. Returns the peak of live bytes, the
 * bytes live at the end of forward, and what Athanor's caching allocator holds
 * (core/buffer-pool.ts: exact-size free lists that are never returned, so a buffer size
 * that peaks at one time and another size that peaks later are both held).
 */
function replay(tr: TraceResult, keep: (b: TracedBuffer) => boolean, scale: (b: TracedBuffer) => number): { peak: number; atForwardEnd: number; held: number } {
  let live = 0, peak = 0, atForwardEnd = 0, held = 0;
  const free = new Map<number, number>();
  for (const e of tr.events) {
    if (e.t === 'mark') { if (e.what === 'forward-end') atForwardEnd = live; continue; }
    const b = tr.buffers[e.id]!;
    if (b.kind === 'param-grad' || !keep(b)) continue;
    const v = b.bytes * scale(b);
    if (e.t === 'alloc') {
      live += v;
      if (live > peak) peak = live;
      const f = free.get(v) ?? 0;
      if (f > 0) free.set(v, f - 1); else held += v;
    } else {
      live -= v;
      free.set(v, (free.get(v) ?? 0) + 1);
    }
  }
  return { peak, atForwardEnd, held };
}

/** y at x from measured [x, y] points: piecewise linear in log–log, extended along the end segments. */
export function interpLogLog(pts: [number, number][], x: number): number {
  const p = [...pts].sort((a, b) => a[0] - b[0]);
  let i = 0;
  while (i < p.length - 2 && x > p[i + 1]![0]) i++;
  const [x0, y0] = p[i]!, [x1, y1] = p[i + 1]!;
  const t = (Math.log(x) - Math.log(x0)) / (Math.log(x1) - Math.log(x0));
  return Math.exp(Math.log(y0) + t * (Math.log(y1) - Math.log(y0)));
}

/** Ring collective over n ranks: α per step plus bytes on the wire over β. */
export function ringTime(kind: 'allreduce' | 'allgather' | 'reducescatter', bytes: number, n: number, link: { alpha: number; beta: number }): number {
  if (n <= 1 || bytes <= 0) return 0;
  const steps = kind === 'allreduce' ? 2 * (n - 1) : n - 1;
  const wire = (kind === 'allreduce' ? 2 : 1) * ((n - 1) / n) * bytes;
  return steps * link.alpha + wire / link.beta;
}

/** The link a group uses: intra-node when its members fit in one node given the rank order tp, dp, pp (innermost first). */
function linkFor(groupSpanDevices: number, c: ClusterSpec, concurrentPerNode: number): { alpha: number; beta: number; cls: 'intra' | 'inter' } {
  const dpn = c.devicesPerNode.value;
  if (groupSpanDevices <= dpn) return { alpha: c.network.intra.alpha.value, beta: c.network.intra.beta.value, cls: 'intra' };
  // A node's injection bandwidth is shared by the devices of the node that talk at once.
  return { alpha: c.network.inter.alpha.value, beta: c.network.inter.beta.value / Math.max(1, Math.min(dpn, concurrentPerNode)), cls: 'inter' };
}

/** Expert weights of an MoE layer (nn/moe.ts `h.{i}.moe.experts.*`): sharded over ep, reduced over edp. */
export const isExpertParamName = (name: string): boolean => /\.moe\.experts\./.test(name);

/** Elements of a parameter one device holds before ZeRO: split by its tp rule, experts over ep. */
function paramShare(p: { name: string; numel: number }, l: Layout): number {
  if (isExpertParamName(p.name)) return p.numel / l.ep;
  const r = tpRule(p.name);
  return r === 'replicated' || r === 'row-bias' ? p.numel : p.numel / l.tp;
}

/**
 * One all-to-all of `bytes` per rank over the ep group (balanced: bytes/ep to each member).
 * The group is ep consecutive dp indices, so its members sit tp devices apart and
 * m = devicesPerNode / tp of them share a node. Flat: every member sends ep − 1 messages,
 * ep − m of them off-node. Hierarchical (expert-parallel-a2a.ts, BaGuaLu): an intra-node
 * exchange among the m local members, then one message per node pair and local index:
 * ep/m − 1 inter-node messages of m× the size. Every device of a node talks at once, so
 * they share its injection bandwidth.
 */
export function allToAllTime(bytes: number, l: Layout, c: ClusterSpec): { time: number; cls: 'intra' | 'inter' | 'intra+inter' } {
  const ep = l.ep;
  if (ep <= 1 || bytes <= 0) return { time: 0, cls: 'intra' };
  const dpn = c.devicesPerNode.value;
  const intra = c.network.intra, inter = c.network.inter;
  const m = Math.max(1, Math.min(ep, Math.floor(dpn / l.tp)));
  const interBeta = inter.beta.value / Math.max(1, dpn);
  const local = (m - 1) * intra.alpha.value + (bytes * (m - 1)) / ep / intra.beta.value;
  if (m >= ep) return { time: local, cls: 'intra' };
  const offNode = (bytes * (ep - m)) / ep / interBeta;
  if (l.a2a === 'hierarchical' && m > 1) {
    const nodes = Math.ceil(ep / m);
    // Phase 1 moves (m−1)/m of the data inside the node; phase 2 the off-node share.
    const p1 = (m - 1) * intra.alpha.value + (bytes * (m - 1)) / m / intra.beta.value;
    return { time: p1 + (nodes - 1) * inter.alpha.value + offNode, cls: 'intra+inter' };
  }
  return { time: local + (ep - m) * inter.alpha.value + offNode, cls: m > 1 ? 'intra+inter' : 'inter' };
}

/** Per-device memory of the largest pipeline stage (no cluster needed: `--dry-run` uses this). */
export function estimateMemory(tr: TraceResult, l: Layout, o: { seqLen: number; dModel: number; allocator?: 'athanor-pool' | 'live'; nativeLowp?: boolean }): MemoryEstimate {
  const { stageParams, stageExpertParams, bufScale, sm } = layoutScales(tr, l, o.allocator);
  const L = tr.nBlocks, pp = l.pp, tp = l.tp, dp = l.dp;
  // Athanor's mixed precision (a bf16 trace): fp32 master weights, gradients, optimizer
  // state, activations and communication; 16-bit copies of GEMM weights per step.
  const athanorLowp = tr.precision === 'bf16';
  const eb = athanorLowp ? 4 : elemBytes(l.precision);
  const lowpCopies = athanorLowp ? gemmParamsPerStage(tr, l) : null;
  // ---- memory, for every stage; report the largest ----
  let best: MemoryEstimate | null = null;
  for (let s = 0; s < pp; s++) {
    const inStage = (b: TracedBuffer): boolean => sm.rank(b.block) === s;
    // P: dense parameters (ZeRO shards them over dp); X: this rank's experts (ZeRO shards
    // them over the expert-data-parallel group edp = dp / ep, whose members hold the same experts).
    const P = stageParams[s]!, X = stageExpertParams[s]!, edp = dp / l.ep;
    // Mixed precision keeps bf16 weights and gradients with fp32 master weights and
    // AdamW moments in the optimizer (ZeRO paper: 2 + 2 + 12 bytes per parameter).
    const paper16 = l.precision === 'bf16' && !athanorLowp;
    const wB = paper16 ? 2 : 4, gB = paper16 ? 2 : 4, oB = paper16 ? 12 : 8;
    // HSDP (shardGroup S): ZeRO-3 shards over the S ranks of a shard group only; the dp/S
    // replica groups hold identical shards (their all-reduce runs in place).
    const sdp = shardDp(l);
    const own = P / (l.zero > 0 ? sdp : 1);
    let weights: number, grads: number, optimizer: number, commBuffers = 0, gatherBuffers = 0;
    const unitOf = (b: number) => tr.params.filter((p) => p.block === b || (b === -1 && p.block === L)).reduce((a, p) => a + paramShare(p, l), 0);
    const blockParams = Math.max(0, ...Array.from({ length: L }, (_, i) => unitOf(i)));
    const outerParams = unitOf(-1);
    const bucket = Math.min(25 * 2 ** 20, P * gB);
    if (o.allocator === 'athanor-pool') {
      // Athanor's data-parallel runtime (src/parallel/data-parallel.ts, zero3.ts), as it allocates:
      // parameters and gradients are re-homed into flat shared buffers (no bucket copies);
      // ZeRO-1/2 all-gather updated slices through a shard-sized staging buffer; ZeRO-2
      // copies finished buckets into two staging buffers and reduce-scatters into a shard
      // gradient, while the full-size gradients return to the buffer pool (which keeps them).
      if (l.zero >= 3 && sdp > 1) {
        // ZeRO-3 (zero3.ts, plans/gpt.ts): the gather units are each block and, untied, the
        // embedding and the LM head on their own (U = the largest); the outer unit O (position
        // table, final norm, a tied embedding) is gathered for the whole step. A rank holds
        // its shard, two gather buffers of U (computing + prefetched) and O; gradients
        // accumulate straight into two reduce-scatter staging buffers of U, then into the
        // shard gradient: no full-size gradients and no bucket copies.
        const { U, O } = zero3Units(tr, l, blockParams, outerParams);
        weights = own * wB;
        grads = own * gB + 2 * U * gB;
        gatherBuffers = (2 * U + O) * wB;
      } else {
        weights = P * wB;
        grads = l.zero >= 2 && dp > 1 ? own * gB + P * gB : P * gB;
      }
      optimizer = (l.zero >= 1 && sdp > 1 ? own : P) * oB;
      if (dp > 1 && (l.zero === 1 || l.zero === 2)) commBuffers += own * wB;
      if (dp > 1 && l.zero === 2) commBuffers += 2 * bucket;
      // expert-parallel-layer.ts: experts are outside ZeRO (their own AdamW, gradients
      // all-reduced over edp in place).
      weights += X * wB; grads += X * gB; optimizer += X * oB;
    } else {
      // ZeRO as the paper defines it: each stage shards one more kind of model state over dp.
      // The largest unit ZeRO-3 gathers at once (a block, or the embeddings + head).
      const unitParams = Math.max(blockParams, outerParams);
      weights = (P * wB) / (l.zero >= 3 ? sdp : 1);
      grads = (P * gB) / (l.zero >= 2 ? sdp : 1);
      optimizer = (P * oB) / (l.zero >= 1 ? sdp : 1);
      if (dp > 1) commBuffers += 2 * bucket; // double-buffered gradient buckets
      if (l.zero >= 3) commBuffers += 2 * unitParams * wB; // the gathered unit and the prefetched next one
      weights += (X * wB) / (l.zero >= 3 ? edp : 1);
      grads += (X * gB) / (l.zero >= 2 ? edp : 1);
      optimizer += (X * oB) / (l.zero >= 1 ? edp : 1);
    }
    // backend/lowp-tensor.ts: one 16-bit copy of every GEMM weight, remade each step.
    if (lowpCopies) weights += 2 * lowpCopies[s]!;
    let hostOffload = 0, diskOffload = 0;
    if (l.offload === 'disk') {
      // offload-optimizer.ts: the fp32 master and both moments (12 bytes per shard element)
      // live in the rank's offload file; memory keeps two chunk buffers of them.
      diskOffload = (optimizer / oB) * 12;
      optimizer = Math.min(diskOffload, 2 * 12 * OFFLOAD_CHUNK);
    } else if (l.offload !== 'none') { hostOffload += optimizer; optimizer = 0; }
    if (l.offload === 'params') { hostOffload += weights; weights = 0; }
    const one = replay(tr, inStage, bufScale);
    // Micro-batches whose saved activations stage s holds at once, from the schedule's own
    // action list (parallel/pipeline/schedule.ts): GPipe all, 1F1B pp − s, interleaved its
    // warm-up chunks + 1 (each chunk 1/vpp of the stage).
    // The whole schedule replayed (micro-batches in flight), beyond one micro-batch's figure;
    // for shapes the schedule refuses, the in-flight count times one micro-batch's forward.
    const sched = pp === 1 ? null : scheduleReplay(tr, l, s, sm, inStage, bufScale);
    const pool = o.allocator === 'athanor-pool';
    const pipelineInFlight = pp === 1 ? 0 : sched ? Math.max(0, pool ? sched.held - one.held : sched.peak - one.peak) : Math.max(0, inflightMicroBatches(l, s) - 1) * one.atForwardEnd;
    // TP all-reduce staging and PP send/recv of one boundary activation.
    const boundary = l.mb * o.seqLen * o.dModel * eb / (l.sp ? tp : 1);
    if (tp > 1) commBuffers += boundary;
    if (pp > 1) commBuffers += 2 * boundary;
    // Expert parallelism: one exchange's send and receive buffers (the dispatched rows).
    // (Athanor's staging pair is sized by the row capacity, ep-terms.ts epStagingBytes.)
    if (l.ep > 1) commBuffers += o.allocator === 'athanor-pool' ? epStagingBytes(tr, l.epLoad ?? 1, (b) => sm.rank(b) === s) : 2 * dispatchBytes(tr, (b) => sm.rank(b) === s) * bufScaleOf(l) * (l.epLoad ?? 1); // the busiest rank receives epLoad× its share
    let workspace = Math.max(0, ...tr.ops.filter((op) => op.cls === 'attention').map((op) => (tr.buffers[op.out]?.shape[2] ?? 0) ** 2 * 4));
    // Without native 16-bit GEMMs, gemm-lowp.ts widens both operands into two grow-only
    // fp32 scratch buffers (sized by the largest GEMM's operands).
    if (athanorLowp && !o.nativeLowp) {
      let a = 0, b = 0;
      for (const op of tr.ops) if (op.cls === 'gemm' && op.lowp) { a = Math.max(a, op.lowp.fwdOperands[0]!, op.lowp.bwdOperands[0]!, op.lowp.bwdOperands[2]!); b = Math.max(b, op.lowp.fwdOperands[1]!, op.lowp.bwdOperands[1]!, op.lowp.bwdOperands[3]!); }
      workspace += 4 * (a + b);
    }
    const acts = o.allocator === 'athanor-pool' ? one.held : one.peak;
    const total = weights + grads + optimizer + gatherBuffers + acts + pipelineInFlight + commBuffers + workspace;
    const m: MemoryEstimate = { weights, grads, optimizer, activations: one.peak, activationsPoolHeld: one.held, pipelineInFlight, commBuffers, workspace, total, hostOffload, gatherBuffers, diskOffload, stage: s };
    if (!best || m.total > best.total) best = m;
  }
  return best!;
}

/** Ranks ZeRO shards over: the shard group under HSDP (ZeRO-3 with shardGroup > 0), else dp. */
export function shardDp(l: Layout): number {
  return l.zero >= 3 && l.shardGroup > 0 ? l.shardGroup : l.dp;
}

/**
 * Athanor's ZeRO-3 units (plans/gpt.ts): U, the largest gathered unit: a block, or with
 * untied embeddings the token embedding or the LM head (units of their own); O, the outer
 * unit: the rest of the non-block parameters (positions, final norm, a tied embedding).
 */
export function zero3Units(tr: TraceResult, l: Layout, blockParams: number, outerParams: number): { U: number; O: number } {
  const head = tr.params.find((p) => p.name === 'lm_head.weight');
  const wte = tr.params.find((p) => p.name === 'wte.weight');
  if (!head || !wte) return { U: blockParams, O: outerParams };
  const hs = paramShare(head, l), ws = paramShare(wte, l);
  return { U: Math.max(blockParams, hs, ws), O: outerParams - hs - ws };
}

/**
 * Pipeline rank s's activation memory over a whole step: the traced allocation events of
 * each of its chunks, forward part (before the forward-end mark) and backward part, played
 * in the schedule's own action order (parallel/pipeline/schedule.ts), one copy per
 * micro-batch. Gives the live peak and what the exact-size buffer pool holds with several
 * micro-batches in flight (chunks of one rank differ: the partitioner gives the
 * embedding's and the head's stages fewer layers).
 */
export function scheduleReplay(tr: TraceResult, l: Layout, s: number, sm: StageMap, keep: (b: TracedBuffer) => boolean, scale: (b: TracedBuffer) => number): { peak: number; held: number } | null {
  const v = sm.v, shape = { kind: l.schedule, p: l.pp, m: l.ga, v };
  if (scheduleShapeError(shape)) return null;
  const parts = Array.from({ length: v }, () => ({ F: [] as MemEvent[], B: [] as MemEvent[] }));
  let fwd = true;
  for (const e of tr.events) {
    if (e.t === 'mark') { if (e.what === 'forward-end') fwd = false; continue; }
    const b = tr.buffers[e.id]!;
    if (b.kind === 'param-grad' || !keep(b) || sm.rank(b.block) !== s) continue;
    parts[sm.chunk(b.block)]![fwd ? 'F' : 'B'].push(e);
  }
  const n = tr.buffers.length;
  let live = 0, peak = 0, held = 0;
  const free = new Map<number, number>();
  const alive = new Set<number>();
  for (const a of rankActions(shape, s)) {
    for (const e of parts[a.chunk]![a.kind === 'F' ? 'F' : 'B']) {
      if (e.t === 'mark') continue;
      const key = a.micro * n + e.id, bytes = tr.buffers[e.id]!.bytes * scale(tr.buffers[e.id]!);
      if (e.t === 'alloc') {
        alive.add(key);
        live += bytes;
        if (live > peak) peak = live;
        const f = free.get(bytes) ?? 0;
        if (f > 0) free.set(bytes, f - 1); else held += bytes;
      } else if (alive.delete(key)) {
        live -= bytes;
        free.set(bytes, (free.get(bytes) ?? 0) + 1);
      }
    }
  }
  return { peak, held };
}

/** Peak forward-not-yet-backward chunks of pipeline rank s under the layout's schedule, in whole-stage micro-batches. */
export function inflightMicroBatches(l: Layout, s: number): number {
  const v = l.schedule === 'interleaved' ? l.vpp : 1;
  if (scheduleShapeError({ kind: l.schedule, p: l.pp, m: l.ga, v })) return l.schedule === 'gpipe' ? l.ga : Math.min(l.ga, l.pp - s);
  let live = 0, peak = 0;
  for (const a of rankActions({ kind: l.schedule, p: l.pp, m: l.ga, v }, s)) { live += a.kind === 'F' ? 1 : -1; peak = Math.max(peak, live); }
  return peak / v;
}

/**
 * Point-to-point messages pipeline rank r sends and receives per step, counted from the
 * schedule's own actions (parallel/pipeline/pipeline-engine.ts): a forward receives its
 * input unless it runs the first virtual stage and sends its output unless it runs the
 * last; a backward receives its output gradient unless it runs the last stage and sends
 * its input gradient unless it runs the first. (Shapes the schedule refuses: 2 per micro-batch.)
 */
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

/** Elements of the parameters GEMMs read (those with a per-step 16-bit copy), per pipeline stage, after tp/ep. */
function gemmParamsPerStage(tr: TraceResult, l: Layout): number[] {
  const names = new Set<string>();
  for (const op of tr.ops) if (op.cls === 'gemm' && op.phase === 'forward') for (const n of op.params) if ((tr.params.find((p) => p.name === n)?.shape.length ?? 0) >= 2) names.add(n);
  const out = new Array<number>(l.pp).fill(0);
  const sm = stageMap(tr, l);
  for (const p of tr.params) if (names.has(p.name)) out[sm.rank(p.block)]! += paramShare(p, l);
  return out;
}

/** Bytes (as traced, float32) of the rows the MoE layers of the selected blocks dispatch per micro-batch, largest layer. */
function dispatchBytes(tr: TraceResult, inBlocks: (block: number) => boolean): number {
  let m = 0;
  for (const o of tr.ops) if (o.op === 'moeDispatch' && o.phase === 'forward' && inBlocks(o.block) && o.out >= 0) m = Math.max(m, tr.buffers[o.out]!.bytes);
  return m;
}

const bufScaleOf = (l: Layout): number => elemBytes(l.precision) / 4;

/** Parameters per pipeline stage after tp, and the scale of each traced buffer under tp/sp/precision. */
function layoutScales(tr: TraceResult, l: Layout, allocator?: ClusterSpec['allocator']) {
  const L = tr.nBlocks, pp = l.pp, tp = l.tp;
  const sm = stageMap(tr, l);
  // A float32 trace is scaled to the layout's element size; a trace under Athanor's mixed
  // precision already has its buffers' real dtypes.
  const actScale = tr.precision === 'bf16' ? 1 : elemBytes(l.precision) / 4;
  const { sharded, allreduceBytes, recomputeAllreduceBytes, allreduceCount, recomputeAllreduceCount } = tpSharded(tr);
  // Athanor's expert parallelism as it allocates (elsewhere the runtime's own copies are unknown).
  const epRows = l.ep > 1 && allocator === 'athanor-pool' ? epRowTerms(tr, l.epLoad ?? 1) : null;
  const bufScale = (b: TracedBuffer): number => {
    const src = b.kind === 'grad' && b.of >= 0 ? b.of : b.id;
    let f = actScale;
    if (tp > 1 && (sharded.has(src) || (l.sp && b.block >= 0 && b.block < L))) f /= tp;
    if (epRows) f *= epRows.bufferScale(b);
    return f;
  };
  // ---- parameters per stage (after tp) ----
  // Dense and expert parameters apart: ZeRO and the gradient reduction treat them differently.
  const stageParams = new Array<number>(pp).fill(0);
  const stageExpertParams = new Array<number>(pp).fill(0);
  let totalParams = 0;
  for (const p of tr.params) {
    totalParams += p.numel;
    (isExpertParamName(p.name) ? stageExpertParams : stageParams)[sm.rank(p.block)]! += paramShare(p, l);
  }

  return { stageParams, stageExpertParams, totalParams, bufScale, sharded, allreduceBytes, recomputeAllreduceBytes, allreduceCount, recomputeAllreduceCount, actScale, sm };
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
  for (const op of tr.ops) {
    if (athanorTp) {
      const n = tpRegionOps(op, L, l.sp);
      if (n) {
        const s = sm.rank(op.block), vs = vsCost[sm.chunk(op.block) * pp + s]!;
        const f = n * (opFixedSeconds(c, 'forward') + helpers.wall), b = n * (opFixedSeconds(c, 'backward') + helpers.wall);
        stageCompute[s]!['forward:tp region ops'] = (stageCompute[s]!['forward:tp region ops'] ?? 0) + f;
        // A recomputed op's region ops run forward again; their backward is the forward op's.
        if (op.phase === 'forward') stageCompute[s]!['backward:tp region ops'] = (stageCompute[s]!['backward:tp region ops'] ?? 0) + b;
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
      if (x.forward) { stageCompute[s]!['forward:sp sequence-axis copies'] = (stageCompute[s]!['forward:sp sequence-axis copies'] ?? 0) + x.forward; vsCost[sm.chunk(op.block) * pp + s]!.F += x.forward; }
      if (x.backward) { stageCompute[s]!['backward:sp sequence-axis copies'] = (stageCompute[s]!['backward:sp sequence-axis copies'] ?? 0) + x.backward; vsCost[sm.chunk(op.block) * pp + s]!.B += x.backward; }
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
