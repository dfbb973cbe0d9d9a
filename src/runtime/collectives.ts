// Collective algorithms over a point-to-point context (socket transports; MPI uses its own).
// Every algorithm uses a fixed communication pattern and reduction order, so all ranks end
// with bit-identical results regardless of message arrival timing.
//
//  allreduce  small: direct (everyone sends everything to everyone, reduce in rank order,
//             accumulating in float32 for bf16); large: ring reduce-scatter + ring all-gather,
//             split into independent "channels" that run concurrently so that reduction of one
//             chunk overlaps with the transfer of the next.
//  reduce-scatter: ring; all-gather: ring; broadcast: direct (small) or pipelined chain;
//  all-to-all(v): direct pairwise; barrier: dissemination.
import type { CommBuffer, CommDType, ReduceOp } from './communicator.js';
import { bytesOf } from './communicator.js';
import { Accumulator, combine, divideInPlace, elementBytes, viewAs } from './reduce-kernels.js';

export interface OpCtx {
  /** Group rank and size. */
  readonly rank: number;
  readonly size: number;
  send(peer: number, step: number, data: Uint8Array): Promise<void>;
  recv(peer: number, step: number, dest: Uint8Array): Promise<void>;
  /** Scratch memory that lives until the operation ends (8-byte aligned). */
  scratch(bytes: number): Uint8Array;
}

export interface Tuning {
  /** Allreduce messages up to this many bytes use the direct algorithm. */
  directMaxBytes: number;
  /** Target bytes per ring channel (pipelining granularity). */
  channelBytes: number;
  maxChannels: number;
  /** Broadcast chunk size for the pipelined chain. */
  bcastChunkBytes: number;
}

export const DEFAULT_TUNING: Tuning = { directMaxBytes: 64 << 10, channelBytes: 4 << 20, maxChannels: 8, bcastChunkBytes: 1 << 20 };

const mod = (a: number, n: number): number => ((a % n) + n) % n;

/** Even split of n elements into k parts (the first n % k parts get one more). */
export function evenCounts(n: number, k: number): number[] {
  const base = Math.floor(n / k), extra = n % k;
  return Array.from({ length: k }, (_, i) => base + (i < extra ? 1 : 0));
}

export function offsetsOf(counts: readonly number[]): number[] {
  const off = new Array<number>(counts.length);
  let s = 0;
  for (let i = 0; i < counts.length; i++) { off[i] = s; s += counts[i]!; }
  return off;
}

function scratchOf(ctx: OpCtx, dtype: CommDType, n: number): CommBuffer {
  return viewAs(dtype, ctx.scratch(n * elementBytes(dtype)), n);
}

/**
 * Ring reduce-scatter of `input` (segments given by off/len, in group-rank order) into `out`
 * (length len[rank]). input is only read, except that `out` may alias input's own segment.
 * Segment j is reduced in the order j+1, j+2, ..., j (mod W), identically on every run.
 */
export async function ringReduceScatter(ctx: OpCtx, dtype: CommDType, op: ReduceOp, input: CommBuffer,
  off: readonly number[], len: readonly number[], out: CommBuffer, stepBase: number, divisor: number): Promise<void> {
  const W = ctx.size, r = ctx.rank;
  const seg = (j: number): CommBuffer => input.subarray(off[j]!, off[j]! + len[j]!);
  if (W === 1) {
    if (out !== seg(r)) out.set(seg(r) as Float32Array & Uint16Array & Int32Array);
    if (op === 'avg') divideInPlace(dtype, out, divisor);
    return;
  }
  const left = mod(r - 1, W), right = mod(r + 1, W);
  let maxSeg = 0;
  for (const l of len) maxSeg = Math.max(maxSeg, l);
  const tmp = [scratchOf(ctx, dtype, maxSeg), W > 2 ? scratchOf(ctx, dtype, maxSeg) : null, W > 3 ? scratchOf(ctx, dtype, maxSeg) : null];
  // tmp[k % 3] receives at step k and is sent at step k + 1.
  const tbuf = (k: number, n: number): CommBuffer => tmp[k % 3]!.subarray(0, n);
  const sends: Promise<void>[] = [];
  const recvs: Promise<void>[] = [];
  recvs[0] = ctx.recv(left, stepBase, bytesOf(tbuf(0, len[mod(r - 2, W)]!)));
  for (let s = 0; s <= W - 2; s++) {
    const sendSeg = mod(r - s - 1, W), recvSeg = mod(r - s - 2, W);
    sends[s] = ctx.send(right, stepBase + s, bytesOf(s === 0 ? seg(sendSeg) : tbuf(s - 1, len[sendSeg]!)));
    if (s + 1 <= W - 2) {
      // tmp[(s+1)%3] was last sent at step s-1; it must be on the wire before we reuse it.
      if (s >= 1) await sends[s - 1];
      recvs[s + 1] = ctx.recv(left, stepBase + s + 1, bytesOf(tbuf(s + 1, len[mod(r - s - 3, W)]!)));
    }
    await recvs[s];
    const rb = tbuf(s, len[recvSeg]!);
    if (s === W - 2) combine(dtype, op, out, rb, seg(r), op === 'avg' ? divisor : 1);
    else combine(dtype, op, rb, rb, seg(recvSeg));
  }
  await Promise.all(sends);
}

/** Ring all-gather in place: segment `rank` of buf is this rank's; the others are filled in. */
export async function ringAllGather(ctx: OpCtx, buf: CommBuffer, off: readonly number[], len: readonly number[], stepBase: number): Promise<void> {
  const W = ctx.size, r = ctx.rank;
  if (W === 1) return;
  const seg = (j: number): Uint8Array => bytesOf(buf.subarray(off[j]!, off[j]! + len[j]!));
  const left = mod(r - 1, W), right = mod(r + 1, W);
  const recvs: Promise<void>[] = [];
  for (let s = 0; s <= W - 2; s++) recvs.push(ctx.recv(left, stepBase + s, seg(mod(r - s - 1, W))));
  const sends = [ctx.send(right, stepBase, seg(r))];
  for (let s = 0; s < W - 2; s++) {
    await recvs[s];
    sends.push(ctx.send(right, stepBase + s + 1, seg(mod(r - s - 1, W))));
  }
  await Promise.all(recvs);
  await Promise.all(sends);
}

export async function allReduceDirect(ctx: OpCtx, dtype: CommDType, op: ReduceOp, buf: CommBuffer, deterministic: boolean): Promise<void> {
  const W = ctx.size, r = ctx.rank, n = buf.length;
  const nb = n * elementBytes(dtype);
  const others: (CommBuffer | null)[] = [];
  const recvs: Promise<void>[] = [];
  for (let j = 0; j < W; j++) {
    if (j === r) { others.push(null); continue; }
    const t = scratchOf(ctx, dtype, n);
    others.push(t);
    recvs.push(ctx.recv(j, 0, bytesOf(t)));
  }
  const sends: Promise<void>[] = [];
  for (let k = 1; k < W; k++) sends.push(ctx.send(mod(r + k, W), 0, bytesOf(buf)));
  void nb;
  const acc = new Accumulator(dtype, op, n);
  if (deterministic) {
    await Promise.all(recvs);
    for (let j = 0; j < W; j++) acc.add(j === r ? buf : others[j]!);
  } else {
    acc.add(buf);
    await Promise.all(recvs.map((p, i) => p.then(() => acc.add(others[i >= r ? i + 1 : i]!))));
  }
  await Promise.all(sends);
  acc.finish(buf, W);
}

export async function allReduceRing(ctx: OpCtx, dtype: CommDType, op: ReduceOp, buf: CommBuffer, t: Tuning): Promise<void> {
  const W = ctx.size, n = buf.length, eb = elementBytes(dtype);
  const nch = Math.max(1, Math.min(t.maxChannels, Math.ceil((n * eb) / t.channelBytes), Math.floor(n / W) || 1));
  const chCounts = evenCounts(n, nch), chOff = offsetsOf(chCounts);
  await Promise.all(chCounts.map(async (cn, c) => {
    const part = buf.subarray(chOff[c]!, chOff[c]! + cn);
    const len = evenCounts(cn, W), off = offsetsOf(len);
    const own = part.subarray(off[ctx.rank]!, off[ctx.rank]! + len[ctx.rank]!);
    await ringReduceScatter(ctx, dtype, op, part, off, len, own, c * 2 * W, W);
    await ringAllGather(ctx, part, off, len, c * 2 * W + W);
  }));
}

export async function reduceScatterRing(ctx: OpCtx, dtype: CommDType, op: ReduceOp, input: CommBuffer, output: CommBuffer, counts: readonly number[]): Promise<void> {
  await ringReduceScatter(ctx, dtype, op, input, offsetsOf(counts), counts, output, 0, ctx.size);
}

export async function allGatherRing(ctx: OpCtx, input: CommBuffer, output: CommBuffer, counts: readonly number[]): Promise<void> {
  const off = offsetsOf(counts);
  output.subarray(off[ctx.rank]!, off[ctx.rank]! + counts[ctx.rank]!).set(input as Float32Array & Uint16Array & Int32Array);
  await ringAllGather(ctx, output, off, counts, 0);
}

export async function broadcast(ctx: OpCtx, buf: CommBuffer, root: number, t: Tuning): Promise<void> {
  const W = ctx.size, r = ctx.rank;
  if (W === 1) return;
  const bytes = bytesOf(buf);
  if (W === 2 || bytes.byteLength <= 256 << 10) {
    if (r === root) await Promise.all(Array.from({ length: W - 1 }, (_, k) => ctx.send(mod(root + 1 + k, W), 0, bytes)));
    else await ctx.recv(root, 0, bytes);
    return;
  }
  // Pipelined chain root -> root+1 -> ... : each chunk is forwarded as soon as it arrives.
  const pos = mod(r - root, W), next = mod(r + 1, W), prev = mod(r - 1, W);
  const nchunks = Math.ceil(bytes.byteLength / t.bcastChunkBytes);
  const chunk = (i: number): Uint8Array => bytes.subarray(i * t.bcastChunkBytes, Math.min(bytes.byteLength, (i + 1) * t.bcastChunkBytes));
  const sends: Promise<void>[] = [];
  if (pos === 0) {
    for (let i = 0; i < nchunks; i++) sends.push(ctx.send(next, i, chunk(i)));
  } else {
    const recvs = Array.from({ length: nchunks }, (_, i) => ctx.recv(prev, i, chunk(i)));
    for (let i = 0; i < nchunks; i++) {
      await recvs[i];
      if (pos < W - 1) sends.push(ctx.send(next, i, chunk(i)));
    }
  }
  await Promise.all(sends);
}

export async function allToAllV(ctx: OpCtx, input: CommBuffer, sendCounts: readonly number[], output: CommBuffer, recvCounts: readonly number[]): Promise<void> {
  const W = ctx.size, r = ctx.rank;
  const so = offsetsOf(sendCounts), ro = offsetsOf(recvCounts);
  const part = (b: CommBuffer, o: number, n: number): Uint8Array => bytesOf(b.subarray(o, o + n));
  const recvs: Promise<void>[] = [];
  for (let k = 1; k < W; k++) { const j = mod(r - k, W); recvs.push(ctx.recv(j, 0, part(output, ro[j]!, recvCounts[j]!))); }
  const sends: Promise<void>[] = [];
  for (let k = 1; k < W; k++) { const j = mod(r + k, W); sends.push(ctx.send(j, 0, part(input, so[j]!, sendCounts[j]!))); }
  output.subarray(ro[r]!, ro[r]! + recvCounts[r]!).set(input.subarray(so[r]!, so[r]! + sendCounts[r]!) as Float32Array & Uint16Array & Int32Array);
  await Promise.all(recvs);
  await Promise.all(sends);
}

export async function barrier(ctx: OpCtx): Promise<void> {
  const W = ctx.size, r = ctx.rank;
  const empty = new Uint8Array(0);
  const sends: Promise<void>[] = [];
  for (let k = 1, round = 0; k < W; k *= 2, round++) {
    sends.push(ctx.send(mod(r + k, W), round, empty));
    await ctx.recv(mod(r - k, W), round, new Uint8Array(0));
  }
  await Promise.all(sends);
}
