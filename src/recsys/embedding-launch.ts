// Starts embedding server processes (one per shard) on this machine and waits
// for their ready lines. The hybrid trainer, the tests and the benchmark use it;
// the token travels through an environment variable, never argv.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EmbeddingServerConfigInput } from './embedding-config.js';
import { EmbeddingClient, type EmbeddingEndpoint } from './embedding-client.js';
import { READY_PREFIX } from './embedding-server-main.js';
import type { WireDType } from './protocol.js';

export const SERVER_MAIN = fileURLToPath(new URL('./embedding-server-main.js', import.meta.url));
const TOKEN_ENV = 'ATHANOR_EMBEDDING_TOKEN';

export interface SpawnServerOptions {
  shard: number;
  numShards: number;
  configPath: string;
  token: string;
  port?: number;
  host?: string;
  /** Checkpoint directory to restore from at start-up (re-shards if it has a different shard count). */
  loadDir?: string;
  readyTimeoutMs?: number;
  /** Forward the server's stderr (logs) to ours. */
  inheritStderr?: boolean;
}

export interface EmbeddingServerProcess { shard: number; host: string; port: number; pid: number; child: ChildProcess; exited: Promise<number | null> }

export function spawnEmbeddingServer(o: SpawnServerOptions): Promise<EmbeddingServerProcess> {
  const host = o.host ?? '127.0.0.1';
  const args = [SERVER_MAIN, '--port', String(o.port ?? 0), '--host', host, '--shard', String(o.shard), '--num-shards', String(o.numShards),
    '--token-env', TOKEN_ENV, '--config', o.configPath];
  if (o.loadDir) args.push('--load', o.loadDir);
  const child = spawn(process.execPath, args, {
    env: { ...process.env, [TOKEN_ENV]: o.token },
    stdio: ['ignore', 'pipe', o.inheritStderr ? 'inherit' : 'pipe'],
  });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  let errText = '';
  child.stderr?.on('data', (d: Buffer) => { errText = (errText + d.toString()).slice(-4000); });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`embedding server ${o.shard}: no ready line within ${o.readyTimeoutMs ?? 30000} ms\n${errText}`)); }, o.readyTimeoutMs ?? 30_000);
    const onExit = (code: number | null): void => { clearTimeout(timer); reject(new Error(`embedding server ${o.shard} exited with ${code} before it was ready\n${errText}`)); };
    child.once('exit', onExit);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = new RegExp(`${READY_PREFIX} .*port=(\\d+) pid=(\\d+)`).exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      child.stdout!.removeAllListeners('data');
      child.stdout!.resume();
      resolve({ shard: o.shard, host, port: Number(m[1]), pid: Number(m[2]), child, exited });
    });
  });
}

export interface LaunchOptions {
  numShards: number;
  /** Config object (written to a temporary file) or the path of a config JSON file. */
  config: EmbeddingServerConfigInput | string;
  token?: string;
  host?: string;
  /** Fixed ports per shard; 0 or absent = any free port. */
  ports?: number[];
  loadDir?: string;
  inheritStderr?: boolean;
}

export interface EmbeddingCluster {
  token: string;
  configPath: string;
  servers: EmbeddingServerProcess[];
  endpoints(): EmbeddingEndpoint[];
  connect(o?: { wireDtype?: WireDType; sharedMemoryBytes?: number }): Promise<EmbeddingClient>;
  /** Sends `signal` to one server and waits for it to exit. */
  kill(shard: number, signal?: NodeJS.Signals): Promise<void>;
  /** Starts shard `shard` again on its old port (or `port`; 0 = any) (e.g. after a crash), optionally from a checkpoint. */
  restart(shard: number, o?: { loadDir?: string; port?: number }): Promise<EmbeddingServerProcess>;
  /** SIGTERM to every server, then waits for them. */
  stop(): Promise<void>;
}

export async function launchEmbeddingServers(o: LaunchOptions): Promise<EmbeddingCluster> {
  const token = o.token ?? randomBytes(24).toString('hex');
  let configPath: string;
  // A config given as an object is written to a temporary directory of ours, removed at stop().
  let ownConfigDir: string | undefined;
  if (typeof o.config === 'string') configPath = o.config;
  else {
    configPath = join(mkdtempSync(join(tmpdir(), 'athanor-emb-')), 'embedding-config.json');
    ownConfigDir = dirname(configPath);
    writeFileSync(configPath, JSON.stringify(o.config));
  }
  const start = (shard: number, port: number, loadDir: string | undefined): Promise<EmbeddingServerProcess> => {
    const so: SpawnServerOptions = { shard, numShards: o.numShards, configPath, token, port };
    if (o.host) so.host = o.host;
    if (loadDir) so.loadDir = loadDir;
    if (o.inheritStderr) so.inheritStderr = true;
    return spawnEmbeddingServer(so);
  };
  const servers = await Promise.all(Array.from({ length: o.numShards }, (_, i) => start(i, o.ports?.[i] ?? 0, o.loadDir)));
  const cluster: EmbeddingCluster = {
    token, configPath, servers,
    endpoints: () => cluster.servers.map((s) => ({ host: s.host, port: s.port })),
    connect: (c) => EmbeddingClient.connect({
      servers: cluster.endpoints(), token, ...(c?.wireDtype ? { wireDtype: c.wireDtype } : {}),
      ...(c?.sharedMemoryBytes !== undefined ? { sharedMemoryBytes: c.sharedMemoryBytes } : {}),
    }),
    async kill(shard, signal = 'SIGKILL') {
      const s = cluster.servers[shard]!;
      if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill(signal);
      await s.exited;
    },
    async restart(shard, r = {}) {
      const s = await start(shard, r.port ?? cluster.servers[shard]!.port, r.loadDir);
      cluster.servers[shard] = s;
      return s;
    },
    async stop() {
      await Promise.all(cluster.servers.map((s) => cluster.kill(s.shard, 'SIGTERM')));
      if (ownConfigDir) rmSync(ownConfigDir, { recursive: true, force: true });
    },
  };
  return cluster;
}
