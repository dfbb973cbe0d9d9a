// Pipeline schedules as per-rank action lists, plus a simulator that replays them with
// unit costs (the theoretical bubble, and a deadlock check every schedule passes in the
// tests). A rank runs its list in order; sends never block (the runtime's point-to-point
// sends are eager), so a schedule is valid iff no rank waits, directly or through a
// chain, on a later action of its own list.
//
// Virtual stages: with v chunks per rank, rank r holds chunks c = 0..v-1, chunk c being
// virtual stage c·p + r (Megatron's interleaving: rank 0 holds stages 0, p, 2p, ...).
// With v = 1 the virtual stage is the rank.

export type PipelineScheduleKind = 'gpipe' | '1f1b' | 'interleaved';
export const PIPELINE_SCHEDULES: readonly PipelineScheduleKind[] = ['gpipe', '1f1b', 'interleaved'];

export interface PipeAction {
  kind: 'F' | 'B';
  /** Micro-batch index, 0..m-1. */
  micro: number;
  /** Local chunk index on this rank, 0..v-1. */
  chunk: number;
}

export interface ScheduleShape {
  kind: PipelineScheduleKind;
  /** Pipeline ranks (parallel.pp). */
  p: number;
  /** Micro-batches per step (train.gradAccum). */
  m: number;
  /** Chunks per rank (parallel.pipelineChunks for interleaved, else 1). */
  v: number;
}

/** Why a shape cannot run, naming the config field; null when it can. */
export function scheduleShapeError(s: ScheduleShape): string | null {
  if (!PIPELINE_SCHEDULES.includes(s.kind)) return `parallel.pipelineSchedule must be one of ${PIPELINE_SCHEDULES.join(', ')}, got '${s.kind}'`;
  if (!Number.isInteger(s.v) || s.v < 1) return `parallel.pipelineChunks must be a positive integer, got ${s.v}`;
  if (s.kind !== 'interleaved' && s.v !== 1) return `internal: schedule '${s.kind}' runs one chunk per rank`;
  if (s.kind === '1f1b' && s.m < s.p) {
    return `train.gradAccum (micro-batches per step, ${s.m}) must be at least parallel.pp (${s.p}) for the 1f1b schedule; raise train.gradAccum or use parallel.pipelineSchedule=gpipe`;
  }
  if (s.kind === 'interleaved') {
    if (s.v < 2) return `parallel.pipelineChunks must be at least 2 for the interleaved schedule, got ${s.v}`;
    if (s.m % s.p !== 0) return `train.gradAccum (${s.m}) must be a multiple of parallel.pp (${s.p}) for the interleaved schedule (micro-batches go round the ranks in groups of pp)`;
  }
  return null;
}

/** Virtual stage of local chunk c on rank r. */
export function virtualStage(p: number, r: number, c: number): number { return c * p + r; }

/** The ordered actions of rank r. */
export function rankActions(s: ScheduleShape, r: number): PipeAction[] {
  const err = scheduleShapeError(s);
  if (err) throw new Error(err);
  const { p, m, v } = s;
  const F = (micro: number, chunk = 0): PipeAction => ({ kind: 'F', micro, chunk });
  const B = (micro: number, chunk = 0): PipeAction => ({ kind: 'B', micro, chunk });
  const out: PipeAction[] = [];
  if (s.kind === 'gpipe') {
    for (let i = 0; i < m; i++) out.push(F(i));
    for (let i = 0; i < m; i++) out.push(B(i));
    return out;
  }
  if (s.kind === '1f1b') {
    // Warm-up forwards fill the pipe below this rank; then one forward, one backward, so
    // at most p - r micro-batches keep activations alive here (GPipe keeps m).
    const warm = Math.min(p - r - 1, m);
    for (let i = 0; i < warm; i++) out.push(F(i));
    for (let i = 0; i < m - warm; i++) { out.push(F(warm + i)); out.push(B(i)); }
    for (let i = m - warm; i < m; i++) out.push(B(i));
    return out;
  }
  // Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM's order). Micro-steps k run in
  // groups of p micro-batches per chunk: forward k uses chunk (k / p) mod v, backward k
  // chunk v-1 - that.
  const total = m * v;
  const chunkOf = (k: number, fwd: boolean): number => { const c = Math.floor((k % (p * v)) / p); return fwd ? c : v - 1 - c; };
  const microOf = (k: number): number => Math.floor(k / (p * v)) * p + (k % p);
  const warm = m === p ? total : Math.min((p - r - 1) * 2 + (v - 1) * p, total);
  for (let k = 0; k < warm; k++) out.push(F(microOf(k), chunkOf(k, true)));
  for (let k = 0; k < total - warm; k++) {
    out.push(F(microOf(warm + k), chunkOf(warm + k, true)));
    out.push(B(microOf(k), chunkOf(k, false)));
  }
  for (let k = total - warm; k < total; k++) out.push(B(microOf(k), chunkOf(k, false)));
  return out;
}

export interface SimResult {
  /** Time the last action ends. */
  makespan: number;
  /** Per rank: 1 - busy / makespan. */
  bubble: number[];
  /** Largest number of micro-batches whose activations a rank holds at once (per chunk summed). */
  peakInFlight: number[];
}

/**
 * Replays the action lists with forward cost fwd/v and backward cost bwd/v per chunk
 * (a rank's total work is then independent of v) and free communication. Throws, naming
 * the blocked ranks and actions, if the schedule deadlocks.
 */
export function simulate(s: ScheduleShape, fwd = 1, bwd = 2): SimResult {
  return replaySchedule(s, (kind) => (kind === 'F' ? fwd : bwd) / s.v);
}

/**
 * The action lists replayed in time: each action takes cost(kind, virtual stage, micro)
 * once its inputs are there, and an input made on another rank arrives `latency` after its
 * producer finished (the message's transfer; sends are eager, so the sender does not wait).
 * The planner's pipeline step (src/plan/estimate.ts) is this makespan with each virtual
 * stage's traced cost, so stage imbalance and the schedule's own dependency waits count.
 */
export function replaySchedule(s: ScheduleShape, cost: (kind: 'F' | 'B', stage: number, micro: number) => number, latency = 0): SimResult {
  const { p, m, v } = s;
  const S = p * v;
  const lists = Array.from({ length: p }, (_, r) => rankActions(s, r));
  const fDone = Array.from({ length: S }, () => new Array<number>(m).fill(-1));
  const bDone = Array.from({ length: S }, () => new Array<number>(m).fill(-1));
  const pos = new Array<number>(p).fill(0);
  const clock = new Array<number>(p).fill(0);
  const busy = new Array<number>(p).fill(0);
  const live = new Array<number>(p).fill(0);
  const peak = new Array<number>(p).fill(0);
  // A neighbouring virtual stage runs on another rank unless p = 1.
  const hop = p > 1 ? latency : 0;
  let left = lists.reduce((a, l) => a + l.length, 0);
  while (left > 0) {
    let progressed = false;
    for (let r = 0; r < p; r++) {
      while (pos[r]! < lists[r]!.length) {
        const a = lists[r]![pos[r]!]!;
        const st = virtualStage(p, r, a.chunk);
        let ready: number;
        if (a.kind === 'F') ready = st === 0 ? 0 : fDone[st - 1]![a.micro]! < 0 ? -1 : fDone[st - 1]![a.micro]! + hop;
        else {
          const own = fDone[st]![a.micro]!;
          const next = st === S - 1 ? own : bDone[st + 1]![a.micro]! < 0 ? -1 : bDone[st + 1]![a.micro]! + hop;
          ready = own < 0 || next < 0 ? -1 : Math.max(own, next);
        }
        if (ready < 0) break;
        const c = cost(a.kind, st, a.micro);
        const start = Math.max(clock[r]!, ready);
        clock[r] = start + c;
        busy[r]! += c;
        (a.kind === 'F' ? fDone : bDone)[st]![a.micro] = clock[r]!;
        live[r]! += a.kind === 'F' ? 1 : -1;
        peak[r] = Math.max(peak[r]!, live[r]!);
        pos[r]!++;
        left--;
        progressed = true;
      }
    }
    if (!progressed) {
      const stuck = lists.map((l, r) => (pos[r]! < l.length ? `rank ${r} at ${l[pos[r]!]!.kind}(micro ${l[pos[r]!]!.micro}, chunk ${l[pos[r]!]!.chunk})` : null)).filter(Boolean);
      throw new Error(`pipeline schedule ${s.kind} p=${p} m=${m} v=${v} deadlocks: ${stuck.join('; ')}`);
    }
  }
  const makespan = Math.max(...clock);
  return { makespan, bubble: busy.map((b) => 1 - b / makespan), peakInFlight: peak };
}

/**
 * The textbook bubble fraction (idle / total time per rank, equal forward and backward
 * cost split over stages): (p-1)/(m+p-1) for GPipe and 1F1B; interleaving divides the
 * bubble time by v, which as a fraction of the step is (p-1)/(v·m+p-1).
 */
export function theoreticalBubble(s: ScheduleShape): number {
  const v = s.kind === 'interleaved' ? s.v : 1;
  return (s.p - 1) / (v * s.m + s.p - 1);
}
