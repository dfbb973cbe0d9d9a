// `athanor recsys <config.json>`: generates data if asked, starts the embedding servers,
// launches the dense trainers (real processes, through the dist launcher), and reports.
// If a process fails, the job is restarted from the newest checkpoint (servers restored
// from their dump of that step, trainers from the dense file) up to train.maxRestarts times.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { launch } from '../runtime/launcher.js';
import { atomicWriteFileSync } from '../io/atomic-write.js';
import { generateCriteo, type GenerateReport } from './criteo-generate.js';
import { launchEmbeddingServers, type EmbeddingCluster } from './embedding-launch.js';
import type { EmbeddingEndpoint } from './embedding-client.js';
import { latestCheckpoint } from './hybrid-checkpoint.js';
import { RECSYS_HELP, loadRecsysConfig, serverConfigOf, type RecsysConfig } from './recsys-config.js';
import { ENDPOINTS_ENV, ENDPOINTS_FILE_ENV, TOKEN_ENV, runRecsysWorker, type RecsysResult } from './recsys-worker.js';
import { superviseServers, type FailoverEvent } from './server-supervisor.js';

function generateIfMissing(c: RecsysConfig, say: (s: string) => void): GenerateReport | null {
  const g = c.data.generate;
  if (!g) return null;
  const base = { numDense: c.data.numDense, numSparse: c.data.numSparse, vocab: g.vocab, zipfS: g.zipfS, modelSeed: g.seed, pairFields: g.pairFields };
  if (!existsSync(c.data.train)) {
    const r = generateCriteo(c.data.train, { rows: g.trainRows, seed: 2 * g.seed + 1, ...base });
    say(`generated ${c.data.train}: ${r.rows} samples, ${r.positives} positive`);
  }
  // The ground-truth report of the test file is kept beside it (regenerated with the file).
  const reportPath = `${c.data.test}.ground-truth.json`;
  if (!existsSync(c.data.test) || !existsSync(reportPath)) {
    const r = generateCriteo(c.data.test, { rows: g.testRows, seed: 2 * g.seed + 2, ...base });
    atomicWriteFileSync(reportPath, JSON.stringify(r, null, 1));
    say(`generated ${c.data.test}: ${r.rows} samples; the hidden model's AUC on it is ${r.groundTruthAUC.toFixed(4)}`);
    return r;
  }
  return JSON.parse(readFileSync(reportPath, 'utf8')) as GenerateReport;
}

async function startServers(c: RecsysConfig, loadDir: string | undefined): Promise<EmbeddingCluster> {
  return launchEmbeddingServers({
    numShards: c.servers.numShards, config: serverConfigOf(c), host: c.servers.host, inheritStderr: true,
    ...(loadDir ? { loadDir } : {}),
  });
}

/** Programmatic hooks of recsysMain (benchmarks and tests; not config). */
export interface RecsysMainHooks {
  /**
   * Given the servers' endpoints, returns the endpoints the trainers should use instead
   * (e.g. a network emulator in front of each server); closed after the trainers exit.
   */
  trainerEndpoints?: (servers: EmbeddingEndpoint[]) => Promise<{ endpoints: EmbeddingEndpoint[]; close(): Promise<void> }>;
  /** Called once the servers of an attempt are up (tests kill one to exercise failover). */
  onServers?: (cluster: EmbeddingCluster) => void;
  /** Every in-job server restart. */
  onFailover?: (e: FailoverEvent) => void;
}

export async function recsysMain(argv: string[], hooks: RecsysMainHooks = {}): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) { console.log(RECSYS_HELP); return 0; }
  if (argv[0] === '--worker') {
    if (!argv[1]) { console.error('athanor recsys --worker <config.json>'); return 2; }
    return runRecsysWorker(argv[1]);
  }
  if (argv.length !== 1) { console.error(`usage: athanor recsys <config.json>   (athanor recsys --help lists the config fields)`); return 2; }
  const configPath = argv[0]!;
  const c = loadRecsysConfig(configPath);
  const say = (s: string): void => console.log(`recsys: ${s}`);
  mkdirSync(c.workDir, { recursive: true });
  const gt = generateIfMissing(c, say);
  for (const p of [c.data.train, c.data.test]) if (!existsSync(p)) throw new Error(`${configPath}: data file ${p} does not exist (set data.generate to create synthetic data)`);
  const ckDir = join(c.workDir, 'checkpoints');
  rmSync(join(c.workDir, 'result.json'), { force: true });
  let attempt = 0;
  for (;;) {
    const ck = c.train.resume && c.train.checkpointEvery > 0 && existsSync(ckDir) ? latestCheckpoint(ckDir) : null;
    if (ck) say(`resuming from step ${ck.step} (${ck.densePath})`);
    const cluster = await startServers(c, ck?.embDir);
    say(`${c.servers.numShards} embedding servers on ${cluster.endpoints().map((e) => `${e.host}:${e.port}`).join(', ')}`);
    let code: number;
    const via = hooks.trainerEndpoints ? await hooks.trainerEndpoints(cluster.endpoints()) : null;
    const endpointsFile = join(c.workDir, 'endpoints.json');
    const sup = superviseServers(cluster, {
      checkpointDir: c.train.checkpointEvery > 0 ? ckDir : null, maxRestarts: c.servers.maxRestarts, endpointsFile,
      say: (s) => { say(s); },
    });
    const seen = sup.events.length;
    hooks.onServers?.(cluster);
    try {
      code = await launch({
        nprocPerNode: c.train.trainers, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: 0, graceS: 5,
        command: ['recsys', '--worker', configPath],
        env: {
          [TOKEN_ENV]: cluster.token, [ENDPOINTS_ENV]: JSON.stringify(via ? via.endpoints : cluster.endpoints()),
          // Through an emulated network the proxies stay put; otherwise a restarted server may move.
          ...(via ? {} : { [ENDPOINTS_FILE_ENV]: endpointsFile }),
        },
      });
      if (code === 0) {
        const cc = await cluster.connect();
        const st = await cc.stats().catch(() => null);
        cc.close();
        if (st) say(`servers: ${st.rows} resident rows, ${st.residentParams} resident / ${st.addressableParams.toExponential(2)} addressable parameters`);
      }
    } finally {
      sup.stop();
      for (const e of sup.events.slice(seen)) hooks.onFailover?.(e);
      await via?.close();
      await cluster.stop();
    }
    if (code === 0) break;
    if (attempt >= c.train.maxRestarts || c.train.checkpointEvery === 0) { say(`trainers failed (exit ${code})`); return code; }
    attempt++;
    say(`trainers failed (exit ${code}); restart ${attempt}/${c.train.maxRestarts} from the newest checkpoint`);
  }
  const r = JSON.parse(readFileSync(join(c.workDir, 'result.json'), 'utf8')) as RecsysResult;
  say(`trained ${r.steps} steps on ${r.trainers} trainers (k=${r.staleness}): ${r.samplesPerSec.toFixed(0)} samples/s`);
  say(`test: AUC ${r.auc.toFixed(4)}  log-loss ${r.logLoss.toFixed(4)}  (${r.evalSamples} samples)`);
  for (const f of r.failovers ?? []) say(`failover: embedding server ${f.shard} was down ${f.downMs.toFixed(0)} ms at step ${f.atStep}; restored at step ${f.restoredStep}, ${f.lostSteps} steps of its row updates lost`);
  if (gt) say(`ground-truth model on the test file: AUC ${gt.groundTruthAUC.toFixed(4)}  log-loss ${gt.groundTruthLogLoss.toFixed(4)}`);
  return 0;
}
