// PERSIA-style hybrid training of DLRM on one trainer:
// - dense part: data parallel, gradients averaged with a synchronous allreduce every step;
// - embeddings: on the embedding servers, updated asynchronously with bounded staleness k.
//
// The embedding pipeline: batch j's lookup is sent right after batch (j - k - 1)'s
// gradient push, k batches ahead of compute. Each server handles a connection's
// requests in order, so the lookup sees exactly the pushes up to batch j - k - 1 of
// this trainer (staleness exactly k, deterministic for one trainer; other trainers'
// pushes interleave as they arrive). Pushes are never awaited by compute. k = 0 is
// fully synchronous: batch j's lookup follows batch j - 1's push on the wire.
//
// Checkpoints (every N steps): lookups never run ahead across a checkpoint step, so at
// the checkpoint every push is acknowledged and the servers hold exactly the state of
// "all batches < step applied"; the servers dump, then rank 0 writes the dense file.
import { mkdirSync } from 'node:fs';
import type { Tensor } from '../core/tensor.js';
import type { Communicator } from '../runtime/communicator.js';
import type { BaseHyper, Optimizer } from '../optim/index.js';
import type { EmbeddingClient, RoutedBatch } from './embedding-client.js';
import type { RoutedFields } from './field-requests.js';
import type { RecBatch } from './criteo.js';
import type { DLRM } from './dlrm.js';
import { IdTable, PendingGradients, idsInFlight } from './stale-row-correction.js';
import {
  checkpointSteps, dumpIdOf, embDirOf, latestCheckpoint, pruneCheckpoints, readDenseCheckpoint, writeDenseCheckpoint, type HybridCheckpointInfo,
} from './hybrid-checkpoint.js';
import { makeOptimizer, type BatchSource, type EvalReport, type HybridTrainerOptions, type TrainReport } from './hybrid-options.js';
import { evaluateModel, forwardBackward, oneHot, type StepGrads } from './hybrid-compute.js';

export { arraySource, type BatchSource, type DenseOptimizerConfig, type EvalReport, type HybridTrainerOptions, type TrainReport } from './hybrid-options.js';

interface Ticket {
  step: number;
  batch: RecBatch;
  /** Per-field routing (bags, or the correction), or null when `fields` carries the batch. */
  routed: RoutedBatch[] | null;
  /** One-hot batch without the correction: all fields routed, looked up and pushed together. */
  fields: RoutedFields | null;
  /** Request-order rows (no correction), or null. */
  rows: Promise<Float32Array[]> | null;
  /** Distinct rows and optimizer states (correction), or null. */
  distinct: Promise<Array<{ rows: Float32Array; state: Float32Array | null }>> | null;
  /** Correction: each field's distinct-id set, and the ids also in an in-flight batch (to replay). */
  tables: IdTable[] | null;
  need: Int32Array[] | null;
  /** This trainer's pushes before this one were sent ahead of the lookup (it reflects them). */
  after: number;
  /**
   * One id per sample in every field: all fields' rows in one field-major (F, B, D) buffer,
   * which the lookups fill block by block and the model takes as one leaf; null otherwise.
   */
  flat: Float32Array | null;
}


export class HybridTrainer {
  readonly model: DLRM;
  client: EmbeddingClient;
  readonly optimizer: Optimizer<BaseHyper>;
  readonly comm: Communicator | null;
  readonly rank: number;
  readonly world: number;
  readonly k: number;
  readonly groups: number[];
  readonly dim: number;
  /** Global steps done. */
  step = 0;
  private readonly params: Tensor[];
  private flat: Float32Array;
  private tickets: Ticket[] = [];
  private pushAcks = new Map<number, Promise<void>>();
  private asyncError: Error | null = null;
  private source: AsyncIterator<RecBatch> | null = null;
  private nextIssue = 0;
  /** Pushes sent so far (= the step after the newest push). */
  private pushesSent = 0;
  private readonly pending: PendingGradients | null;
  /** (F, B, D) row buffers of finished steps, reused by the next tickets (allocation and GC per step otherwise). */
  private rowBufs: Float32Array[] = [];
  /** The row gradients of the all-fields push, which reads them before it returns. */
  private gradBuf = new Float32Array(0);
  /** Wall milliseconds waiting for rows and in the all-reduce since the last train() began. */
  private waitMs = { lookup: 0, allReduce: 0 };

  constructor(readonly o: HybridTrainerOptions) {
    this.model = o.model;
    this.client = o.client;
    this.comm = o.comm ?? null;
    this.rank = this.comm?.rank ?? 0;
    this.world = this.comm?.size ?? 1;
    if (!Number.isInteger(o.staleness) || o.staleness < 0) throw new Error(`HybridTrainer: staleness must be an integer >= 0 (got ${o.staleness})`);
    this.k = o.staleness;
    const F = o.model.cfg.numSparse;
    this.groups = o.groups ?? Array.from({ length: F }, (_, f) => f);
    if (this.groups.length !== F) throw new Error(`HybridTrainer: ${this.groups.length} groups for ${F} sparse fields`);
    this.dim = o.model.cfg.embDim;
    for (const g of this.groups) if (this.client.dim(g) !== this.dim) throw new Error(`HybridTrainer: feature group ${g} has dim ${this.client.dim(g)} on the servers, the model's embDim is ${this.dim}`);
    this.params = o.model.parameters();
    this.optimizer = makeOptimizer(this.params, o.dense ?? { kind: 'adamw', lr: 1e-3 });
    this.flat = new Float32Array(this.params.reduce((s, p) => s + p.size, 0));
    this.pending = o.stalenessCorrection && this.k > 0 ? this.makePending(this.client) : null;
  }

  private makePending(client: EmbeddingClient): PendingGradients {
    const opts = this.groups.map((g) => {
      const c = client.optimizer(g);
      if (!c) throw new Error(`HybridTrainer: staleness correction needs the servers' sparse optimizer of group ${g}, and the servers did not report it`);
      return c;
    });
    return new PendingGradients(this.dim, client.wireDtype, opts);
  }

  private log(s: string): void { this.o.log?.(s); }

  // ------------------------------------------------------------ pipeline

  private ckptEvery(): number { return this.o.checkpoint?.every ?? 0; }

  /** Issues tickets (read batch, route, send the lookup) up to batch `upTo` inclusive. */
  private async issueUpTo(upTo: number): Promise<void> {
    while (this.nextIssue <= upTo) {
      const j = this.nextIssue;
      const r = await this.source!.next();
      if (r.done) throw new Error(`HybridTrainer: the data source ran out at step ${j}`);
      const batch = r.value;
      const block = batch.size * this.dim;
      const flat = oneHot(batch) ? this.rowBuffer(this.groups.length * block) : null;
      // Sent now: the caller orders this after push j - k - 1 and before push j - k.
      let rows: Ticket['rows'] = null, distinct: Ticket['distinct'] = null, tables: IdTable[] | null = null, need: Int32Array[] | null = null;
      let routed: RoutedBatch[] | null = null, fields: RoutedFields | null = null;
      if (flat && !this.pending) {
        fields = this.client.routeFields(this.groups, batch.sparse);
        rows = this.client.lookupFields(fields, flat).then((all) => this.groups.map((_, f) => all.subarray(f * block, (f + 1) * block)));
        rows.catch(() => undefined);
      } else if (this.pending) {
        routed = this.groups.map((g, f) => this.client.route(g, batch.sparse[f]!));
        // Every queued ticket's push comes after this lookup: those batches' ids may be stale here.
        tables = routed.map((rb) => new IdTable(rb));
        const inFlight = idsInFlight(tables, this.tickets.map((t) => t.tables!));
        need = inFlight.need;
        distinct = Promise.all(routed.map((rb, f) => this.client.lookupDistinct(this.groups[f]!, rb, { stateFor: inFlight.mask[f]! })));
        distinct.catch(() => undefined); // observed when the step awaits it
      } else {
        const rbs = this.groups.map((g, f) => this.client.route(g, batch.sparse[f]!));
        routed = rbs;
        rows = Promise.all(rbs.map((rb, f) => this.client.lookup(this.groups[f]!, rb, flat ? { out: flat.subarray(f * block, (f + 1) * block) } : {})));
        rows.catch(() => undefined);
      }
      this.tickets.push({ step: j, batch, routed, fields, rows, distinct, tables, need, after: this.pushesSent, flat });
      this.nextIssue++;
    }
  }

  private rowBuffer(len: number): Float32Array {
    const i = this.rowBufs.findIndex((b) => b.length === len);
    return i >= 0 ? this.rowBufs.splice(i, 1)[0]! : new Float32Array(len);
  }

  private async drainPushes(): Promise<void> {
    const acks = [...this.pushAcks.values()];
    await Promise.all(acks);
    this.pushAcks.clear();
    if (this.asyncError) throw this.asyncError;
  }


  /** Forward + backward of one batch (hybrid-compute.ts), with this trainer's model, fields and gradient scale. */
  private compute(batch: RecBatch, rows: Float32Array[], scaled: boolean, flat: Float32Array | null, into: Float32Array | null): StepGrads {
    return forwardBackward(this.model, batch, rows, this.dim, this.groups.length, this.o.embGradScale ?? 1 / this.world, scaled, flat, into);
  }

  private async allReduceDense(): Promise<void> {
    if (!this.comm || this.world === 1) return;
    const flat = this.flat;
    let o = 0;
    for (const p of this.params) {
      if (p.grad) flat.set(p.grad.data as Float32Array, o); else flat.fill(0, o, o + p.size);
      o += p.size;
    }
    await this.comm.allReduce(flat, 'avg');
    o = 0;
    for (const p of this.params) {
      if (p.grad) (p.grad.data as Float32Array).set(flat.subarray(o, o + p.size));
      o += p.size;
    }
  }

  /** A ticket's rows in request order; with the correction, after replaying the pushes its lookup missed. */
  private async rowsOf(t: Ticket): Promise<Float32Array[]> {
    if (t.rows) return t.rows;
    const d = await t.distinct!;
    this.pending!.replay(t.after, t.step, t.tables!, t.need!, d.map((x) => x.rows), d.map((x) => x.state));
    const block = t.batch.size * this.dim;
    return d.map((x, f) => this.client.scatterRows(t.routed![f]!, x.rows, this.dim, t.flat ? t.flat.subarray(f * block, (f + 1) * block) : undefined));
  }

  private async runStep(total: number): Promise<number> {
    const i = this.step;
    const every = this.ckptEvery();
    const boundary = every > 0 ? (Math.floor(i / every) + 1) * every : Infinity;
    await this.issueUpTo(Math.min(i + this.k, boundary - 1, total - 1));
    const t = this.tickets.shift()!;
    if (t.step !== i) throw new Error(`HybridTrainer: internal error: ticket for step ${t.step} at step ${i}`);
    const tw = performance.now();
    const rows = await this.rowsOf(t);
    this.waitMs.lookup += performance.now() - tw;
    if (this.asyncError) throw this.asyncError;
    this.optimizer.zeroGrad();
    let into: Float32Array | null = null;
    if (t.fields && t.flat) {
      if (this.gradBuf.length !== t.flat.length) this.gradBuf = new Float32Array(t.flat.length);
      into = this.gradBuf;
    }
    const { loss, grads, all, scale } = this.compute(t.batch, rows, this.pending !== null, t.flat, into);
    if (t.flat) this.rowBufs.push(t.flat); // nothing reads or writes a finished step's rows
    const client = this.client;
    const last = this.groups.length - 1;
    const sent = t.fields ? client.pushFields(t.fields, all!, { scale })
      : Promise.all(t.routed!.map((rb, f) => client.pushGrads(this.groups[f]!, rb, grads[f]!, { advanceStep: f === last, scale })));
    const ack = sent.then(() => undefined, (e: unknown) => { this.asyncError ??= e instanceof Error ? e : new Error(String(e)); throw this.asyncError; });
    ack.catch(() => undefined);
    if (this.pending) this.pending.record(i, t.tables!, grads);
    this.pushesSent = i + 1;
    this.pushAcks.set(i, ack);
    this.pushAcks.delete(i - this.k - 2);
    await this.issueUpTo(Math.min(i + this.k + 1, boundary - 1, total - 1));
    const ta = performance.now();
    await this.allReduceDense();
    this.waitMs.allReduce += performance.now() - ta;
    this.optimizer.step();
    this.step = i + 1;
    return loss;
  }

  // ------------------------------------------------------------ checkpoints

  /** Drains the pipeline, dumps the servers (rank 0), writes the dense file (rank 0). */
  async saveCheckpoint(batchSize: number): Promise<void> {
    const c = this.o.checkpoint;
    if (!c) throw new Error('HybridTrainer: no checkpoint directory configured');
    await this.drainPushes();
    await this.comm?.barrier();
    if (this.rank === 0) {
      mkdirSync(c.dir, { recursive: true });
      await this.client.dump(embDirOf(c.dir, this.step), dumpIdOf(this.step));
      writeDenseCheckpoint(c.dir, this.model, this.optimizer, {
        step: this.step, batchSize, worldSize: this.world, samplesPerRank: this.step * batchSize,
      });
      pruneCheckpoints(c.dir, c.keep ?? 2);
      this.log(`checkpoint: step ${this.step} -> ${c.dir}`);
    }
    await this.comm?.barrier();
  }

  /** Restores the newest checkpoint (dense state everywhere; rank 0 reloads the servers). Returns it, or null. */
  async resume(): Promise<HybridCheckpointInfo | null> {
    const c = this.o.checkpoint;
    if (!c) return null;
    // Every rank verifies the same files, so all pick the same step; rank 0 warns about skipped ones.
    const info = latestCheckpoint(c.dir, (m) => { if (this.rank === 0) process.stderr.write(`athanor: ${m}\n`); });
    if (!info) return null;
    readDenseCheckpoint(info.densePath, this.model, this.optimizer);
    if (this.rank === 0) await this.client.load(info.embDir, info.dumpId);
    await this.comm?.barrier();
    this.step = info.step;
    this.log(`resumed from step ${info.step} (${info.densePath})`);
    return info;
  }

  private async resetPipeline(src: BatchSource): Promise<void> {
    for (const t of this.tickets) await (t.rows ?? t.distinct)!.catch(() => undefined);
    await Promise.allSettled([...this.pushAcks.values()]);
    this.tickets = [];
    this.pushAcks.clear();
    this.asyncError = null;
    this.pending?.clear();
    this.pushesSent = this.step;
    await this.source?.return?.();
    this.source = src.open(this.step);
    this.nextIssue = this.step;
  }

  // ------------------------------------------------------------ public loops

  /** Trains until global step `total`; returns per-step losses and throughput. */
  async train(src: BatchSource, total: number, batchSize: number): Promise<TrainReport> {
    const losses = new Map<number, number>();
    const c = this.o.checkpoint;
    let recoveries = 0;
    if (c) {
      // A checkpoint at the start step, so a failure before the first periodic one can roll back too.
      await this.comm?.barrier();
      const need = checkpointSteps(c.dir).length === 0;
      await this.comm?.barrier();
      if (need) await this.saveCheckpoint(batchSize);
    }
    await this.resetPipeline(src);
    const startStep = this.step;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    this.waitMs = { lookup: 0, allReduce: 0 };
    let done = 0;
    while (this.step < total) {
      try {
        const s = this.step;
        const loss = await this.runStep(total);
        losses.set(s, loss);
        done++;
        if (c && c.every > 0 && this.step % c.every === 0) await this.saveCheckpoint(batchSize);
        await this.o.onStep?.(this.step, loss);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        if (!this.o.recover || !c || recoveries >= (this.o.maxRecoveries ?? 3)) throw err;
        recoveries++;
        this.log(`step ${this.step}: ${err.message}; recovering from the last checkpoint`);
        await this.resetPipeline(src).catch(() => undefined);
        this.client.close();
        this.client = await this.o.recover(err);
        const info = await this.resume();
        if (!info) throw err;
        await this.resetPipeline(src);
      }
    }
    await this.drainPushes();
    const seconds0 = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    await this.source?.return?.();
    this.source = null;
    // A final checkpoint, so a rerun of a finished job resumes at its end.
    if (c && c.every > 0 && this.step % c.every !== 0) await this.saveCheckpoint(batchSize);
    const seconds = seconds0;
    const samples = done * batchSize * this.world;
    return { steps: this.step - startStep, losses, samples, seconds, samplesPerSec: samples / seconds, recoveries, correctedRows: this.pending?.corrected ?? 0, cpuSeconds: (cpu.user + cpu.system) / 1e6,
      lookupWaitSeconds: this.waitMs.lookup / 1000, allReduceSeconds: this.waitMs.allReduce / 1000 };
  }


  /** AUC and log-loss over batches, with read-only lookups (the next batch's lookups overlap this batch's compute). */
  async evaluate(batches: AsyncIterable<RecBatch> | Iterable<RecBatch>): Promise<EvalReport> {
    return evaluateModel(this.model, this.client, this.groups, this.dim, batches);
  }
}
