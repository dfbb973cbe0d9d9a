// In-job failover through `athanor recsys`: 2 embedding servers, 2 trainer processes; one
// server is SIGKILLed mid-run. The job restarts it from the newest checkpoint, the
// trainers reconnect and finish without a job restart (train.maxRestarts = 0 would make
// any trainer failure fatal), the lost updates are reported, and test AUC stays within
// 0.5 point of an uninterrupted run of the same job. The job is big enough (120k samples,
// 468 steps) that two uninterrupted runs, whose asynchronous updates interleave
// differently, land well within that: at 40k samples they drifted up to 1.4 points apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { recsysMain } from '../src/recsys/recsys-main.js';
import { checkpointSteps } from '../src/recsys/hybrid-checkpoint.js';
import type { RecsysResult } from '../src/recsys/recsys-worker.js';
import type { FailoverEvent } from '../src/recsys/server-supervisor.js';

test('a server SIGKILLed mid-run is replaced in-job; the run completes and reports what was lost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'recsys-failover-'));
  try {
    const cfg = (work: string) => ({
      workDir: work,
      data: { train: join(dir, 'train.tsv'), test: join(dir, 'test.tsv'), numDense: 4, numSparse: 6, generate: { trainRows: 120000, testRows: 20000, vocab: 200 } },
      servers: { numShards: 2, optimizer: { kind: 'adagrad', lr: 0.05 }, init: { kind: 'uniform', scale: 0.3 }, maxRestarts: 2 },
      model: { embDim: 8, bottom: [16], top: [16] },
      train: { trainers: 2, batchSize: 128, staleness: 2, epochs: 1, checkpointEvery: 20, maxRestarts: 0, dense: { kind: 'adamw', lr: 0.003 }, logEvery: 50 },
    });
    const run = async (work: string, kill: boolean): Promise<{ code: number; r: RecsysResult; events: FailoverEvent[] }> => {
      const path = join(dir, `${work}.json`);
      writeFileSync(path, JSON.stringify(cfg(work)));
      const events: FailoverEvent[] = [];
      let poll: NodeJS.Timeout | null = null;
      const code = await recsysMain([path], {
        onFailover: (e) => events.push(e),
        onServers: (cluster) => {
          if (!kill) return;
          // Kill shard 1 once the checkpoint of step 40 is committed (mid-run: 468 steps in all).
          const ck = join(dir, work, 'checkpoints');
          poll = setInterval(() => {
            if (!existsSync(ck) || !checkpointSteps(ck).some((s) => s >= 40)) return;
            clearInterval(poll!); poll = null;
            setTimeout(() => void cluster.kill(1, 'SIGKILL'), 150); // a few steps past it: updates to lose
          }, 20);
        },
      });
      if (poll) clearInterval(poll);
      return { code, r: JSON.parse(readFileSync(join(dir, work, 'result.json'), 'utf8')) as RecsysResult, events };
    };
    const base = await run('base', false);
    assert.equal(base.code, 0);
    assert.deepEqual(base.r.failovers, []);
    const hit = await run('hit', true);
    assert.equal(hit.code, 0, 'the job completed without a job restart');
    assert.equal(hit.r.steps, base.r.steps);
    assert.equal(hit.events.length, 1, 'one in-job server restart');
    assert.equal(hit.events[0]!.shard, 1);
    assert.equal(hit.events[0]!.exit, 'SIGKILL');
    assert.ok(hit.events[0]!.checkpointStep! >= 40);
    assert.equal(hit.r.failovers.length, 1, 'rank 0 reconnected once');
    const f = hit.r.failovers[0]!;
    assert.equal(f.shard, 1);
    assert.equal(f.restoredStep, hit.events[0]!.checkpointStep, 'restored at the checkpoint the job restarted it from');
    assert.ok(f.atStep >= f.restoredStep && f.lostSteps === f.atStep - f.restoredStep);
    const d = Math.abs(hit.r.auc - base.r.auc);
    console.log(`AUC ${hit.r.auc.toFixed(4)} with a failover (lost ${f.lostSteps} steps) vs ${base.r.auc.toFixed(4)} without`);
    assert.ok(d < 0.005, `AUC ${hit.r.auc.toFixed(4)} with a failover vs ${base.r.auc.toFixed(4)} without: ${(100 * d).toFixed(2)} points apart`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
