// In-job failover of embedding servers: while the trainers run, a server process that
// exits is started again from the newest committed checkpoint (its own rows of that
// dump, re-sharded if needed), on its old port if it is free, else on any port (then the
// endpoints file the trainers re-read on reconnect is rewritten). The trainers' clients
// reconnect with backoff and resend what was unanswered; the job goes on. The server's
// row updates since that checkpoint are lost: the trainers count and log them.
import { atomicWriteFileSync } from '../io/atomic-write.js';
import type { EmbeddingCluster } from './embedding-launch.js';
import { latestCheckpoint } from './hybrid-checkpoint.js';

export interface FailoverEvent {
  shard: number;
  /** How the server ended (exit code or signal). */
  exit: string;
  /** Training step of the checkpoint it was restored from (null: none, it restarted empty). */
  checkpointStep: number | null;
  port: number;
  restartMs: number;
}

export interface SupervisorOptions {
  /** Checkpoint directory of the job (null: no checkpoints, a restarted server starts empty). */
  checkpointDir: string | null;
  /** Restarts allowed over the whole job (all shards together). */
  maxRestarts: number;
  /** Rewritten with the servers' endpoints whenever one moves. */
  endpointsFile: string;
  say: (line: string) => void;
}

export interface Supervisor {
  events: FailoverEvent[];
  /** Stops watching (call before stopping the servers on purpose). */
  stop(): void;
}

export function superviseServers(cluster: EmbeddingCluster, o: SupervisorOptions): Supervisor {
  let stopping = false;
  const events: FailoverEvent[] = [];
  const writeEndpoints = (): void => atomicWriteFileSync(o.endpointsFile, JSON.stringify(cluster.endpoints()));
  writeEndpoints();
  const watch = (shard: number): void => {
    const proc = cluster.servers[shard]!;
    void proc.exited.then(async () => {
      if (stopping || cluster.servers[shard] !== proc) return;
      const exit = proc.child.signalCode ?? `exit code ${proc.child.exitCode}`;
      if (events.length >= o.maxRestarts) {
        o.say(`embedding server ${shard} ended (${exit}); no in-job restarts left (servers.maxRestarts = ${o.maxRestarts})`);
        return;
      }
      const t0 = performance.now();
      const ck = o.checkpointDir ? latestCheckpoint(o.checkpointDir) : null;
      const from = ck ? { loadDir: ck.embDir } : {};
      let p;
      try {
        p = await cluster.restart(shard, from);
      } catch (e) {
        // Old port taken (or the start failed there): any free port, announced in the endpoints file.
        o.say(`embedding server ${shard}: restart on port ${proc.port} failed (${(e as Error).message.split('\n')[0]}); trying another port`);
        try {
          p = await cluster.restart(shard, { ...from, port: 0 });
        } catch (e2) {
          o.say(`embedding server ${shard}: could not be restarted: ${(e2 as Error).message.split('\n')[0]}`);
          return;
        }
      }
      if (stopping) return;
      writeEndpoints();
      const ev: FailoverEvent = { shard, exit, checkpointStep: ck?.step ?? null, port: p.port, restartMs: performance.now() - t0 };
      events.push(ev);
      o.say(`embedding server ${shard} ended (${exit}); restarted in ${ev.restartMs.toFixed(0)} ms on port ${p.port} ` +
        (ck ? `from the checkpoint of step ${ck.step}` : 'EMPTY (no checkpoint: every row of this shard is lost)'));
      watch(shard);
    });
  };
  for (let s = 0; s < cluster.servers.length; s++) watch(s);
  return { events, stop: () => { stopping = true; } };
}
