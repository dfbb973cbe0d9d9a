// Memory per device of a traced model under a layout (`athanor plan`, `train --dry-run`):
// weights, gradients and optimizer state after tp/pp/dp/ep/ZeRO sharding, activations from a
// replay of the trace's buffer lifetimes (under the recompute policy and, for pipelines, the
// schedule's in-flight micro-batches), communication buffers and workspace. The stage maps
// and per-parameter shares here are shared with the time estimate (estimate.ts).
import type { TraceResult, TracedBuffer, MemEvent } from './trace.js';
import type { ClusterSpec } from './cluster.js';
import { devices, type Layout } from './layout.js';
import { tpRule } from './shard-rules.js';
import { epRowTerms, epStagingBytes } from './ep-terms.js';
import { rankActions, scheduleShapeError } from '../parallel/pipeline/schedule.js';
import { DEFAULT_CHUNK as OFFLOAD_CHUNK } from '../parallel/offload-store.js';

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

export const elemBytes = (p: Layout['precision']): number => (p === 'bf16' ? 2 : 4);

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
export function tpSharded(tr: TraceResult): { sharded: Set<number>; allreduceBytes: Map<number, number>; recomputeAllreduceBytes: Map<number, number>; allreduceCount: Map<number, number>; recomputeAllreduceCount: Map<number, number> } {
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
export function replay(tr: TraceResult, keep: (b: TracedBuffer) => boolean, scale: (b: TracedBuffer) => number): { peak: number; atForwardEnd: number; held: number } {
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
export const isExpertParamName = (name: string): boolean => /\.moe\.experts\./.test(name);

/** Elements of a parameter one device holds before ZeRO: split by its tp rule, experts over ep. */
export function paramShare(p: { name: string; numel: number }, l: Layout): number {
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


/** Elements of the parameters GEMMs read (those with a per-step 16-bit copy), per pipeline stage, after tp/ep. */
export function gemmParamsPerStage(tr: TraceResult, l: Layout): number[] {
  const names = new Set<string>();
  for (const op of tr.ops) if (op.cls === 'gemm' && op.phase === 'forward') for (const n of op.params) if ((tr.params.find((p) => p.name === n)?.shape.length ?? 0) >= 2) names.add(n);
  const out = new Array<number>(l.pp).fill(0);
  const sm = stageMap(tr, l);
  for (const p of tr.params) if (names.has(p.name)) out[sm.rank(p.block)]! += paramShare(p, l);
  return out;
}

/** Bytes (as traced, float32) of the rows the MoE layers of the selected blocks dispatch per micro-batch, largest layer. */
export function dispatchBytes(tr: TraceResult, inBlocks: (block: number) => boolean): number {
  let m = 0;
  for (const o of tr.ops) if (o.op === 'moeDispatch' && o.phase === 'forward' && inBlocks(o.block) && o.out >= 0) m = Math.max(m, tr.buffers[o.out]!.bytes);
  return m;
}

export const bufScaleOf = (l: Layout): number => elemBytes(l.precision) / 4;

/** Parameters per pipeline stage after tp, and the scale of each traced buffer under tp/sp/precision. */
export function layoutScales(tr: TraceResult, l: Layout, allocator?: ClusterSpec['allocator']) {
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
