// Hybrid (k = 4) vs synchronous (k = 0) recommender training: 2 embedding servers and
// 2 dense trainer processes, the full `athanor recsys` path (Criteo-shaped synthetic
// data: 13 dense + 26 categorical features), reporting samples/s and test AUC of both.
// Run: node dist/bench/recsys-hybrid-bench.js [trainRows]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { generateCriteo } from '../src/recsys/criteo-generate.js';
import { recsysMain } from '../src/recsys/recsys-main.js';
import type { RecsysResult } from '../src/recsys/recsys-worker.js';

export interface RecsysHybridBenchResult {
  trainRows: number;
  groundTruthAUC: number;
  runs: Array<{ staleness: number; samplesPerSec: number; auc: number; logLoss: number; steps: number }>;
  speedup: number;
}

export async function runRecsysHybridBench(o: { trainRows?: number; testRows?: number; batchSize?: number; epochs?: number } = {}): Promise<RecsysHybridBenchResult> {
  const trainRows = o.trainRows ?? 200_000, testRows = o.testRows ?? 20_000;
  const dir = mkdtempSync(join(tmpdir(), 'recsys-bench-'));
  try {
    const gen = { vocab: 1000, zipfS: 1.05, modelSeed: 1, pairFields: 0 };
    generateCriteo(join(dir, 'train.tsv'), { rows: trainRows, seed: 3, ...gen });
    const gt = generateCriteo(join(dir, 'test.tsv'), { rows: testRows, seed: 4, ...gen });
    const runs: RecsysHybridBenchResult['runs'] = [];
    for (const k of [0, 4]) {
      const work = join(dir, `k${k}`);
      const cfg = {
        workDir: work,
        data: { train: join(dir, 'train.tsv'), test: join(dir, 'test.tsv') },
        servers: { numShards: 2, wireDtype: 'bfloat16', optimizer: { kind: 'adagrad', lr: 0.05 }, init: { kind: 'uniform', scale: 0.3 } },
        model: { embDim: 16, bottom: [64], top: [64], seed: 1 },
        train: { trainers: 2, batchSize: o.batchSize ?? 512, epochs: o.epochs ?? 3, staleness: k, dense: { kind: 'adamw', lr: 0.003 }, checkpointEvery: 0, logEvery: 1000000 },
      };
      const path = join(dir, `k${k}.json`);
      writeFileSync(path, JSON.stringify(cfg));
      const code = await recsysMain([path]);
      if (code !== 0) throw new Error(`recsys-hybrid-bench: run with k=${k} exited ${code}`);
      const r = JSON.parse(readFileSync(join(work, 'result.json'), 'utf8')) as RecsysResult;
      runs.push({ staleness: k, samplesPerSec: r.samplesPerSec, auc: r.auc, logLoss: r.logLoss, steps: r.steps });
    }
    return { trainRows, groundTruthAUC: gt.groundTruthAUC, runs, speedup: runs[1]!.samplesPerSec / runs[0]!.samplesPerSec };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const rows = process.argv[2] ? Number(process.argv[2]) : undefined;
  runRecsysHybridBench(rows ? { trainRows: rows } : {}).then((r) => {
    console.log(`\nrecsys hybrid bench: ${r.trainRows} train samples, 2 servers, 2 trainers (ground-truth AUC ${r.groundTruthAUC.toFixed(4)})`);
    for (const x of r.runs) console.log(`  k=${x.staleness}: ${x.samplesPerSec.toFixed(0)} samples/s, AUC ${x.auc.toFixed(4)}, log-loss ${x.logLoss.toFixed(4)} (${x.steps} steps)`);
    console.log(`  speedup k=4 / k=0: ${r.speedup.toFixed(2)}x`);
    console.log(JSON.stringify(r));
  }, (e: unknown) => { console.error(e); process.exitCode = 1; });
}
