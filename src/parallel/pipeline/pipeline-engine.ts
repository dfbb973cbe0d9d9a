// Runs a pipeline schedule on one rank: forwards and backwards of its stage chunks in
// schedule order, activations and their gradients exchanged point-to-point with the
// neighbouring ranks through the pipeline group's Communicator.send/recv (the same
// transport, sequence checks and watchdog as every collective).
//
// Messages: the activation entering virtual stage s travels with tag 2·chunk(s), the
// gradient leaving it backwards with tag 2·chunk(s-1)+1 (the receiver's chunk), so for one
// (peer, tag) pair messages arrive in micro-batch order on every schedule and the runtime's
// per-tag FIFO matching pairs them. Sends are not awaited until the step ends (they are
// eager); their payloads are private copies in reused shared buffers (message-buffers.ts),
// and a received activation becomes the stage input in place.
//
// The step returns the mean micro-batch loss (computed on the last stage, broadcast over
// the pipeline as float64 bits so every rank holds the same number) and leaves each
// parameter's gradient scaled by 1/m, tied embedding copies summed over the first and
// last stage, as single-process accumulation would.
import { fromStorage, full, type Tensor } from '../../core/tensor.js';
import { backward, noGrad } from '../../autograd/tape.js';
import type { Communicator } from '../../runtime/communicator.js';
import type { GptPipelineStages } from '../plans/gpt-pipeline.js';
import { rankActions, theoreticalBubble, type PipeAction, type ScheduleShape } from './schedule.js';
import { forwardDetached, release, type LiveGraph } from './graph-lifetime.js';
import { lowpKind } from '../../backend/precision.js';
import { from16, to16 } from '../../backend/gemm-lowp.js';
import { MessageBuffers } from './message-buffers.js';

/** One micro-batch: rows × T token ids and next-token targets (the step-schedule seam's MicroBatch). */
export interface PipeMicroBatch { x: Int32Array; y: Int32Array; rows: number; T: number }

export interface PipelineStepStats {
  /** Wall time of the schedule (first action to last send completed), seconds. */
  wallS: number;
  /** Time this rank spent computing forwards and backwards, seconds. */
  busyS: number;
  /** 1 - busy / wall on this rank. */
  bubble: number;
  /** Mean of the pipeline ranks' bubbles (identical on every pipeline rank). */
  meanBubble: number;
  /** (p-1)/(v·m+p-1). */
  theory: number;
}

export interface PipelineEngineOptions {
  /** The pipeline group: group rank = pipeline stage index. */
  pp: Communicator;
  stages: GptPipelineStages;
  shape: ScheduleShape;
  /**
   * {first stage, last stage} of this pipeline, present on those two ranks when the
   * embedding is tied: the two copies' gradients are summed over it.
   */
  embedGroup?: Communicator | null;
  /**
   * Called for each parameter once its gradient is final in this step, from the backward
   * of a chunk's last micro-batch, so data-parallel reductions overlap the rest of the
   * schedule. A tied embedding is left out: its copies are summed only when the step ends
   * (the caller's reduction picks it up afterwards).
   */
  onGradReady?: (p: Tensor) => void;
}

/** `msg`: the message buffer the stage input was received into (returned after its backward). */
interface InFlight { input: Tensor; graph: LiveGraph; msg: Float32Array | null }

export class PipelineEngine {
  readonly p: number;
  readonly rank: number;
  private readonly actions: PipeAction[];
  lastStats: PipelineStepStats | null = null;
  private readonly f64 = new Float64Array(2);
  private readonly gradReady: ((p: Tensor) => void) | undefined;
  /** Shared buffers of the messages, reused from step to step. */
  readonly messages = new MessageBuffers();

  constructor(private readonly o: PipelineEngineOptions) {
    this.p = o.pp.size;
    this.rank = o.pp.rank;
    if (o.shape.p !== this.p) throw new Error(`pipeline: schedule is for ${o.shape.p} stages but the pipeline group has ${this.p} ranks`);
    if (o.stages.chunks.length !== o.shape.v) throw new Error(`pipeline: rank ${this.rank} holds ${o.stages.chunks.length} chunks, the schedule runs ${o.shape.v}`);
    this.actions = rankActions(o.shape, this.rank);
    const hook = o.onGradReady;
    const tied = o.embedGroup && o.embedGroup.size > 1 ? o.stages.wte?.weight ?? null : null;
    this.gradReady = hook ? (p) => { if (p !== tied) hook(p); } : undefined;
    if (o.stages.cfg.tieEmbeddings && this.p > 1) {
      const holds = o.stages.chunks.some((c) => c.first || c.last);
      if (holds && !o.embedGroup) throw new Error(`pipeline: rank ${this.rank} holds a tied embedding copy but no embedding group was given`);
    }
  }

  /** (rank, chunk) that runs virtual stage s. */
  private where(s: number): { rank: number; chunk: number } {
    return { rank: s % this.p, chunk: Math.floor(s / this.p) };
  }

  // Activations and their gradients cross stages in the compute dtype: under
  // train.precision=bf16 they travel as bf16 (half the bytes; rounded once on the way, as
  // Megatron's bf16 pipeline does), widened back to fp32 on arrival. Both ends run the
  // same config, so they agree on the wire format.
  // Received into a message buffer (shared memory, used in place by the communication
  // thread), which the caller hands back to this.messages when done with it.
  private async recv(n: number, src: number, tag: number): Promise<Float32Array> {
    const buf = this.messages.take(n);
    if (lowpKind() !== 'bfloat16') {
      await this.o.pp.recv(buf, src, tag).wait();
      return buf;
    }
    const wire = this.messages.take(n, 'u16');
    await this.o.pp.recv(wire, src, tag).wait();
    from16('bfloat16', 1, n, wire, 0, n, buf, 0, n);
    this.messages.give(wire);
    return buf;
  }

  /** Starts a send of `n` elements of `data` from `off` (copied now) that is awaited when the step ends; a failure is reported there (or by the receive it breaks). */
  private sendAsync(data: Float32Array, off: number, n: number, dst: number, tag: number): Promise<void> {
    let buf: Float32Array | Uint16Array;
    if (lowpKind() === 'bfloat16') {
      buf = this.messages.take(n, 'u16');
      to16('bfloat16', 1, n, data, off, n, buf, 0, n);
    } else {
      buf = this.messages.take(n);
      buf.set(data.subarray(off, off + n));
    }
    // The buffer is reused once the send has completed (a failed send's is not).
    const w = this.o.pp.send(buf, dst, tag).wait().then(() => this.messages.give(buf));
    w.catch(() => undefined);
    return w;
  }

  /** Forward + backward of one optimizer step's micro-batches (see the file comment). */
  async runStep(micro: readonly PipeMicroBatch[]): Promise<number> {
    const { stages, shape } = this.o;
    if (micro.length !== shape.m) throw new Error(`pipeline: the schedule expects ${shape.m} micro-batches per step (train.gradAccum), got ${micro.length}`);
    const inflight = new Map<string, InFlight>();
    const sends: Promise<void>[] = [];
    const scale = 1 / shape.m;
    let lossSum = 0;
    // MoE auxiliary losses of this rank's non-last chunks (the last stage's are in lossSum).
    let auxSum = 0;
    let busy = 0;
    const t0 = performance.now();
    try {
      for (const a of this.actions) {
        const ch = stages.chunks[a.chunk]!;
        const mb = micro[a.micro]!;
        const key = `${a.micro}:${a.chunk}`;
        if (a.kind === 'F') {
          let input: Tensor;
          let msg: Float32Array | null = null;
          if (ch.first) input = fromStorage(mb.x, [mb.rows, mb.T], 'int32');
          else {
            const dims = stages.activationShape(mb.rows, mb.T);
            const src = this.where(ch.stage - 1);
            msg = await this.recv(dims.reduce((x, y) => x * y, 1), src.rank, 2 * a.chunk);
            input = fromStorage(msg, dims, 'float32');
            input.requiresGrad = true;
          }
          const ts = performance.now();
          const targets = ch.last ? fromStorage(mb.y, [mb.rows, mb.T], 'int32') : undefined;
          const graph = forwardDetached(() => stages.forwardChunk(a.chunk, input, targets), ch.last ? undefined : () => stages.takeChunkAux());
          if (graph.aux) auxSum += graph.aux.item();
          if (ch.last) lossSum += graph.out.item();
          else {
            const out = graph.out;
            const dst = this.where(ch.stage + 1);
            sends.push(this.sendAsync(out.data as Float32Array, out.offset, out.size, dst.rank, 2 * dst.chunk));
          }
          busy += performance.now() - ts;
          inflight.set(key, { input, graph, msg });
        } else {
          const f = inflight.get(key);
          if (!f) throw new Error(`pipeline: schedule runs the backward of micro-batch ${a.micro} chunk ${a.chunk} before its forward`);
          inflight.delete(key);
          let grad: Tensor;
          let gradMsg: Float32Array | null = null;
          if (ch.last) grad = full([], scale);
          else {
            const dims = stages.activationShape(mb.rows, mb.T);
            gradMsg = await this.recv(dims.reduce((x, y) => x * y, 1), this.where(ch.stage + 1).rank, 2 * a.chunk + 1);
            grad = fromStorage(gradMsg, dims, 'float32');
          }
          const ts = performance.now();
          // A stage's MoE auxiliary losses enter the step's loss with the micro-batch weight,
          // as in one process (their gradient is local to the stage).
          const also = f.graph.aux ? [{ output: f.graph.aux, grad: full([], scale) }] : undefined;
          backward(f.graph.out, { grad, also, onLeafGradReady: a.micro === shape.m - 1 ? this.gradReady : undefined });
          if (gradMsg) this.messages.disposeTensor(grad, gradMsg);
          else grad.dispose();
          if (!ch.first) {
            const g = f.input.grad;
            // An input the stage did not use would have no gradient; send zeros then.
            const dst = this.where(ch.stage - 1);
            if (g) sends.push(this.sendAsync(g.data as Float32Array, g.offset, g.size, dst.rank, 2 * dst.chunk + 1));
            else sends.push(this.sendAsync(new Float32Array(f.input.size), 0, f.input.size, dst.rank, 2 * dst.chunk + 1));
            g?.dispose();
            f.input.grad = null;
          }
          release(f.graph);
          if (f.msg) this.messages.disposeTensor(f.input, f.msg);
          else f.input.dispose();
          busy += performance.now() - ts;
        }
      }
      await Promise.all(sends);
    } finally {
      for (const f of inflight.values()) { release(f.graph); f.input.dispose(); }
    }
    const wall = performance.now() - t0;
    await this.syncTiedEmbedding();
    // With MoE layers the loss also holds every stage's auxiliary losses: summed over the
    // pipeline in stage order (float64 bits), identical on every rank.
    const loss = this.hasMoe ? (await this.sumOverPipeline(lossSum + auxSum)) * scale : await this.broadcastLoss(lossSum * scale);
    const bubble = wall > 0 ? Math.max(0, 1 - busy / wall) : 0;
    this.lastStats = { wallS: wall / 1000, busyS: busy / 1000, bubble, meanBubble: await this.meanOverPipeline(bubble), theory: theoreticalBubble(shape) };
    return loss;
  }

  /** Validation loss of one micro-batch: forwards only, stage by stage. */
  async evalLoss(mb: PipeMicroBatch): Promise<number> {
    const { stages } = this.o;
    const wasTraining = stages.training;
    stages.eval();
    let loss = 0;
    const sends: Promise<void>[] = [];
    try {
      // Chunks in virtual-stage order: chunk c of this rank is stage c·p + rank.
      for (let c = 0; c < stages.chunks.length; c++) {
        const ch = stages.chunks[c]!;
        let input: Tensor;
        let msg: Float32Array | null = null;
        if (ch.first) input = fromStorage(mb.x, [mb.rows, mb.T], 'int32');
        else {
          const shape = stages.activationShape(mb.rows, mb.T);
          msg = await this.recv(shape.reduce((a, b) => a * b, 1), this.where(ch.stage - 1).rank, 2 * c);
          input = fromStorage(msg, shape, 'float32');
        }
        const out = noGrad(() => stages.forwardChunk(c, input, ch.last ? fromStorage(mb.y, [mb.rows, mb.T], 'int32') : undefined));
        if (msg) this.messages.disposeTensor(input, msg);
        if (ch.last) loss = out.item();
        else {
          const dst = this.where(ch.stage + 1);
          sends.push(this.sendAsync(out.data as Float32Array, out.offset, out.size, dst.rank, 2 * dst.chunk));
        }
        out.dispose();
      }
      await Promise.all(sends);
    } finally {
      stages.train(wasTraining);
    }
    return this.broadcastLoss(loss);
  }

  /** Sums the tied embedding's gradient over its two copies (first and last stage). */
  private async syncTiedEmbedding(): Promise<void> {
    const g = this.o.embedGroup;
    if (!g || g.size < 2) return;
    const w = this.o.stages.wte!.weight;
    if (!w.grad) w.grad = full(w.shape, 0).keep();
    const gd = w.grad.data as Float32Array;
    // Sum in a fixed order (first stage's + last stage's) so both copies stay bit-identical.
    await g.allReduce(gd.subarray(w.grad.offset, w.grad.offset + w.grad.size), { op: 'sum', deterministic: true }).wait();
  }

  private get hasMoe(): boolean { return this.o.stages.moeLayout().total > 0; }

  /** Sum of a float64 over the pipeline ranks in rank order, bit-identical on every rank. */
  async sumOverPipeline(x: number): Promise<number> {
    const mine = new Float64Array([x]), all = new Float64Array(this.p);
    await this.o.pp.allGather(new Int32Array(mine.buffer), new Int32Array(all.buffer)).wait();
    let s = 0;
    for (const v of all) s += v;
    return s;
  }

  /** The last stage's value on every pipeline rank, bit for bit (float64 carried as raw bits). */
  private async broadcastLoss(x: number): Promise<number> {
    this.f64[0] = x;
    await this.o.pp.broadcast(new Int32Array(this.f64.buffer, 0, 2), this.where(this.p * this.o.shape.v - 1).rank).wait();
    return this.f64[0];
  }

  private async meanOverPipeline(x: number): Promise<number> {
    const b = new Float32Array([x]);
    await this.o.pp.allReduce(b, { op: 'avg' }).wait();
    return b[0]!;
  }
}
