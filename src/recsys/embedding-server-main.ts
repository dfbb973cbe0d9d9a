#!/usr/bin/env node
// One embedding server process:
//   node dist/src/recsys/embedding-server-main.js --port P --shard i --num-shards n \
//        --token-env VAR --config file.json [--host 127.0.0.1] [--load DIR] [--dump-id ID]
//        [--load-latest CHECKPOINT_DIR]   (newest committed checkpoint of a job, if any)
// Prints one ready line on stdout once it accepts connections:
//   athanor-embedding-server ready shard=<i> num-shards=<n> host=<h> port=<P> pid=<pid>
// The token is read from the environment variable named by --token-env, never from
// the command line (which other users can read). SIGTERM/SIGINT close it cleanly.
import { existsSync, readFileSync } from 'node:fs';
import { latestCheckpoint } from './hybrid-checkpoint.js';
import { pathToFileURL } from 'node:url';
import { parseServerConfig } from './embedding-config.js';
import { loadShard } from './embedding-checkpoint.js';
import { EmbeddingShard } from './embedding-shard.js';
import { EmbeddingServer } from './embedding-server.js';

export const READY_PREFIX = 'athanor-embedding-server ready';

export interface ServerArgs {
  port: number; host: string; shard: number; numShards: number; tokenEnv: string; config: string; load?: string; dumpId?: string; quiet: boolean;
  /** A job's checkpoint directory: load its newest committed checkpoint if there is one (a replaced pod's restart). */
  loadLatest?: string;
}

export function parseServerArgs(argv: string[]): ServerArgs {
  const a = new Map<string, string>();
  let quiet = false;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    if (k === '--quiet') { quiet = true; continue; }
    if (!k.startsWith('--') || i + 1 >= argv.length) throw new Error(`embedding-server-main: unexpected argument '${k}'`);
    a.set(k.slice(2), argv[++i]!);
  }
  const int = (k: string, def?: number): number => {
    const v = a.get(k);
    if (v === undefined) {
      if (def === undefined) throw new Error(`embedding-server-main: --${k} is required`);
      return def;
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`embedding-server-main: --${k} must be a non-negative integer (got '${v}')`);
    return n;
  };
  const str = (k: string): string => {
    const v = a.get(k);
    if (!v) throw new Error(`embedding-server-main: --${k} is required`);
    return v;
  };
  const r: ServerArgs = {
    port: int('port', 0), host: a.get('host') ?? '127.0.0.1', shard: int('shard'), numShards: int('num-shards'),
    tokenEnv: str('token-env'), config: str('config'), quiet,
  };
  if (a.has('load')) r.load = a.get('load')!;
  if (a.has('dump-id')) r.dumpId = a.get('dump-id')!;
  if (a.has('load-latest')) r.loadLatest = a.get('load-latest')!;
  if (r.load && r.loadLatest) throw new Error('embedding-server-main: give --load or --load-latest, not both');
  return r;
}

export async function main(argv: string[]): Promise<void> {
  const args = parseServerArgs(argv);
  const token = process.env[args.tokenEnv];
  if (!token) throw new Error(`embedding-server-main: environment variable ${args.tokenEnv} (--token-env) is empty or unset`);
  const config = parseServerConfig(JSON.parse(readFileSync(args.config, 'utf8')), args.config);
  const shard = new EmbeddingShard(config, args.shard, args.numShards);
  const log = args.quiet ? () => undefined : (m: string) => process.stderr.write(`[embedding-server ${args.shard}/${args.numShards}] ${m}\n`);
  let loadedFrom: { dumpId: string; step: number } | undefined;
  const ck = args.loadLatest && existsSync(args.loadLatest) ? latestCheckpoint(args.loadLatest) : null;
  const loadDir = args.load ?? ck?.embDir;
  if (args.loadLatest && !ck) log(`no checkpoint in ${args.loadLatest} yet: starting empty`);
  if (loadDir) {
    const r = loadShard(shard, loadDir, args.dumpId ?? ck?.dumpId);
    loadedFrom = { dumpId: r.dumpId, step: r.step };
    log(`loaded ${r.rowsLoaded} rows from ${loadDir} (dump ${r.dumpId}, ${r.fromNumShards} old shards, step ${r.step})`);
  }
  const server = new EmbeddingServer({ shard, token, host: args.host, log, ...(loadedFrom ? { loadedFrom } : {}) });
  const port = await server.listen(args.port);
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: shutting down`);
    server.close().then(() => process.exit(0), () => process.exit(1));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.stdout.write(`${READY_PREFIX} shard=${args.shard} num-shards=${args.numShards} host=${args.host} port=${port} pid=${process.pid}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
