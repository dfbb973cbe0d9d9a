// ZeRO-2's staging queue (parallel/data-parallel.ts): a bucket whose gradients are complete
// while both reduce-scatter staging buffers are still in flight waits in a queue, its
// gradients kept, instead of blocking backward; it starts once a buffer is free (polled at
// the next gradient-ready hook, or drained by reduceGrads), in completion order, with its
// own gradients. A communicator whose reduce-scatters complete only when the test says so
// makes the in-flight states deterministic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Module, parameter, type InitContext } from '../src/nn/module.js';
import { Rng } from '../src/core/rng.js';
import { fromStorage } from '../src/core/tensor.js';
import { WorkHandle, type CommBuffer, type Work } from '../src/runtime/communicator.js';
import { replicate } from '../src/parallel/data-parallel.js';
import type { GradComm } from '../src/parallel/grad-comm.js';

class Params extends Module {
  constructor(ctx: InitContext, n: number, size: number) {
    super();
    for (let i = 0; i < n; i++) this.param(`w${i}`, parameter(ctx, [size], { kind: 'normal', std: 1 }));
  }
}

type Held = WorkHandle & { done: boolean; finish(): void };

/** One rank; each reduce-scatter copies its input when finished: by finish(), by waitSync (counted), or at once in auto mode. */
class HeldComm implements GradComm {
  readonly backend = 'held';
  works: Held[] = [];
  posted: Float32Array[] = [];
  blockingWaits = 0;
  auto = false;
  reduceScatterV(input: CommBuffer, output: CommBuffer): Work {
    this.posted.push(Float32Array.from(input as Float32Array));
    let resolve!: () => void;
    const w = new WorkHandle('reducescatter', this.works.length, new Promise<void>((r) => (resolve = r))) as Held;
    w.done = false;
    w.finish = () => { if (w.done) return; (output as Float32Array).set((input as Float32Array).subarray(0, output.length)); w.done = true; resolve(); };
    this.works.push(w);
    if (this.auto) w.finish();
    return w;
  }
  allReduce(): Work { return new WorkHandle('allreduce', 0, Promise.resolve()); }
  allGatherV(input: CommBuffer, output: CommBuffer): Work { (output as Float32Array).set(input as Float32Array); return new WorkHandle('allgather', 0, Promise.resolve()); }
  waitSync(work: Work): void { const w = work as Held; if (!w.done) { this.blockingWaits++; w.finish(); } }
  testSync(work: Work): boolean { return (work as Held).done; }
  finishAll(): void { this.auto = true; for (const w of this.works) w.finish(); }
}

test('ZeRO-2: a finished bucket waits for a staging buffer without blocking backward, and starts in order with its own gradients', async () => {
  const size = 64;
  const model = new Params({ device: 'cpu', dtype: 'float32', rng: new Rng(3) }, 5, size);
  const comm = new HeldComm();
  // One parameter per bucket: buckets fill up to bucketMB, here exactly one parameter's bytes.
  const dp = replicate(model, comm, 0, 1, { zero: 2, bucketMB: (size * 4) / 2 ** 20, deterministic: true });
  const params = dp.named.map(([, p]) => p);
  const grads = params.map((_, i) => Float32Array.from({ length: size }, (_, j) => i * 1000 + j));
  const ready = (i: number): void => {
    const p = params[i]!;
    p.grad = fromStorage(grads[i]!.slice(), [size], 'float32');
    dp.onGradReady!(p);
  };
  // Backward finishes parameters in reverse order.
  for (const i of [4, 3, 2, 1]) ready(i);
  assert.equal(comm.posted.length, 2, 'two buckets in flight (two staging buffers)');
  assert.equal(comm.blockingWaits, 0, 'backward never blocked');
  assert.ok(params[2]!.grad && params[1]!.grad, 'waiting buckets keep their gradients');
  // The first reduce-scatter completes; the next hook starts the oldest waiting bucket, not the newest.
  comm.works[0]!.finish();
  ready(0);
  assert.equal(comm.posted.length, 3);
  assert.equal(comm.blockingWaits, 0);
  assert.equal(params[2]!.grad, null, 'the started bucket gave its gradients back');
  assert.ok(params[1]!.grad && params[0]!.grad);
  comm.finishAll();
  await dp.reduceGrads();
  assert.equal(comm.posted.length, 5, 'every bucket reduce-scattered once');
  // Buckets in completion order (4, 3, 2, 1, 0), each with its own gradients.
  [4, 3, 2, 1, 0].forEach((i, k) => assert.deepEqual([...comm.posted[k]!], [...grads[i]!], `reduce-scatter ${k} carries parameter ${i}'s gradient`));
  assert.ok(params.every((p) => p.grad === null));
});
