// `athanor launch`: a torchrun-like launcher. Hosts the rendezvous store (on node 0), spawns
// nproc-per-node ranks with ATHANOR_* (and torchrun's RANK/WORLD_SIZE/...) env, prefixes
// their output with `[rank N]`, and tears the job down as soon as any rank fails.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TcpStoreServer } from './tcp-store.js';

export interface LaunchOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr: string;
  /** 0 = pick a free port (single node only). */
  masterPort: number;
  /** Seconds between SIGTERM and SIGKILL when tearing the job down. */
  graceS: number;
  command: string[];
  /** Extra env for the ranks. */
  env?: Record<string, string>;
}

export const ATHANOR_SUBCOMMANDS = ['train', 'eval', 'generate', 'sample', 'demo', 'bench', 'prepare', 'tokenize', 'convert', 'recsys', 'serve', 'info', 'launch'];

const USAGE = 'usage: athanor launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] [--grace-s S] -- <command...>';

export function parseLaunchArgs(argv: readonly string[]): LaunchOptions {
  const sep = argv.indexOf('--');
  const flags = sep < 0 ? argv : argv.slice(0, sep);
  const command = sep < 0 ? [] : argv.slice(sep + 1);
  const o: LaunchOptions = { nprocPerNode: 1, nnodes: 1, nodeRank: 0, masterAddr: '127.0.0.1', masterPort: 0, graceS: 5, command };
  const num = (name: string, v: string | undefined, min: number): number => {
    const x = Number(v);
    if (v === undefined || !Number.isInteger(x) || x < min) throw new Error(`athanor launch: ${name} needs an integer >= ${min}, got '${v ?? ''}'\n${USAGE}`);
    return x;
  };
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i]!;
    const [k, inline] = f.includes('=') ? [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)] : [f, undefined];
    const val = (): string | undefined => inline ?? flags[++i];
    switch (k) {
      case '--nproc-per-node': case '--nproc_per_node': o.nprocPerNode = num(k, val(), 1); break;
      case '--nnodes': o.nnodes = num(k, val(), 1); break;
      case '--node-rank': case '--node_rank': o.nodeRank = num(k, val(), 0); break;
      case '--master-addr': case '--master_addr': { const v = val(); if (!v) throw new Error(`athanor launch: ${k} needs a value\n${USAGE}`); o.masterAddr = v; break; }
      case '--master-port': case '--master_port': o.masterPort = num(k, val(), 0); break;
      case '--grace-s': o.graceS = num(k, val(), 0); break;
      default: throw new Error(`athanor launch: unknown option '${f}'\n${USAGE}`);
    }
  }
  if (command.length === 0) throw new Error(`athanor launch: no command after '--'\n${USAGE}`);
  if (o.nodeRank >= o.nnodes) throw new Error(`athanor launch: --node-rank ${o.nodeRank} must be < --nnodes ${o.nnodes}`);
  if (o.nnodes > 1 && o.masterPort === 0) throw new Error('athanor launch: --master-port is required with --nnodes > 1');
  return o;
}

/** The athanor CLI entry (dist/src/cli/main.js), relative to this compiled file. */
export function cliMainPath(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'main.js');
}

/** Athanor subcommands (and `athanor ...`) run as `node <cli main.js> ...`; anything else as given. */
export function resolveCommand(command: readonly string[]): { file: string; args: string[] } {
  const [first, ...rest] = command;
  if (first === 'athanor') return { file: process.execPath, args: [cliMainPath(), ...rest] };
  if (ATHANOR_SUBCOMMANDS.includes(first!)) return { file: process.execPath, args: [cliMainPath(), first!, ...rest] };
  if (first === 'node') return { file: process.execPath, args: rest };
  return { file: first!, args: rest };
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `was killed by signal ${signal}` : `exited with code ${code}`;
}

function pipeLines(src: NodeJS.ReadableStream, dst: NodeJS.WritableStream, prefix: string): void {
  let pending = '';
  src.setEncoding('utf8');
  src.on('data', (chunk: string) => {
    const text = pending + chunk;
    const lines = text.split('\n');
    pending = lines.pop()!;
    if (lines.length) dst.write(lines.map((l) => `${prefix}${l}\n`).join(''));
  });
  src.on('end', () => { if (pending) dst.write(`${prefix}${pending}\n`); pending = ''; });
}

/** Runs the job; resolves with the launcher's exit code (0 when every rank exited 0). */
export async function launch(o: LaunchOptions): Promise<number> {
  const world = o.nprocPerNode * o.nnodes;
  let token = process.env.ATHANOR_STORE_TOKEN;
  if (!token) {
    if (o.nnodes > 1) throw new Error('athanor launch: with --nnodes > 1, set ATHANOR_STORE_TOKEN to the same secret on every node');
    token = randomBytes(24).toString('hex');
  }
  let server: TcpStoreServer | null = null;
  let port = o.masterPort;
  if (o.nodeRank === 0) {
    const host = o.nnodes > 1 ? '0.0.0.0' : o.masterAddr === 'localhost' ? '127.0.0.1' : o.masterAddr;
    server = await TcpStoreServer.start({ host, port: o.masterPort, token });
    port = server.port;
  }
  const { file, args } = resolveCommand(o.command);
  const children: { child: ChildProcess; rank: number; exited: boolean }[] = [];
  let failure: string | null = null;
  let exitCode = 0;
  let killTimer: NodeJS.Timeout | null = null;

  const sentSignals = new Set<NodeJS.Signals>();
  const killAll = (sig: NodeJS.Signals): void => {
    sentSignals.add(sig);
    for (const c of children) {
      if (c.exited || c.child.pid === undefined) continue;
      try { process.kill(-c.child.pid, sig); } catch { try { c.child.kill(sig); } catch { /* gone */ } }
    }
  };
  const teardown = (): void => {
    if (killTimer) return;
    killAll('SIGTERM');
    killTimer = setTimeout(() => killAll('SIGKILL'), o.graceS * 1000);
    killTimer.unref();
  };

  const done = new Promise<void>((resolve) => {
    let remaining = o.nprocPerNode;
    for (let lr = 0; lr < o.nprocPerNode; lr++) {
      const rank = o.nodeRank * o.nprocPerNode + lr;
      const env: NodeJS.ProcessEnv = {
        ...process.env, ...o.env,
        ATHANOR_RANK: String(rank), ATHANOR_LOCAL_RANK: String(lr), ATHANOR_WORLD_SIZE: String(world),
        ATHANOR_LOCAL_WORLD_SIZE: String(o.nprocPerNode), ATHANOR_NODE_RANK: String(o.nodeRank),
        ATHANOR_MASTER_ADDR: o.masterAddr, ATHANOR_MASTER_PORT: String(port), ATHANOR_STORE_TOKEN: token,
        ATHANOR_STORE_HOSTED: '1',
        RANK: String(rank), LOCAL_RANK: String(lr), WORLD_SIZE: String(world), LOCAL_WORLD_SIZE: String(o.nprocPerNode),
        MASTER_ADDR: o.masterAddr, MASTER_PORT: String(port),
      };
      // Own process group per rank, so teardown reaches anything the rank spawned.
      const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const entry = { child, rank, exited: false };
      children.push(entry);
      pipeLines(child.stdout!, process.stdout, `[rank ${rank}] `);
      pipeLines(child.stderr!, process.stderr, `[rank ${rank}] `);
      child.on('error', (e) => {
        if (!failure) { failure = `athanor launch: rank ${rank} could not be started (${file}): ${e.message}`; exitCode = 1; teardown(); }
      });
      child.on('exit', (code, signal) => {
        entry.exited = true;
        if (code === 0 && !signal) return;
        const what = `rank ${rank} (local rank ${lr}, pid ${child.pid}) ${describeExit(code, signal)}`;
        if (!failure) {
          failure = `athanor launch: ${what}; terminating the other ranks`;
          process.stderr.write(`${failure}\n`);
          exitCode = code && code > 0 ? code : 1;
          teardown();
        } else if (!(signal && sentSignals.has(signal))) {
          // A second rank failing on its own (not from our teardown) may be the root cause:
          // when one rank is killed, a peer that loses its connection can exit first.
          process.stderr.write(`athanor launch: also ${what}\n`);
        }
      });
      child.on('close', () => { if (--remaining === 0) resolve(); });
    }
  });

  const onSignal = (sig: NodeJS.Signals): void => {
    if (!failure) { failure = `athanor launch: received ${sig}; terminating the ranks`; process.stderr.write(`${failure}\n`); exitCode = 128 + (os.constants.signals[sig] ?? 15); }
    teardown();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await done;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (killTimer) clearTimeout(killTimer);
    if (server) await server.close();
  }
  return exitCode;
}

/** CLI entry: `athanor launch ...` calls this with the arguments after `launch`. */
export async function launchMain(argv: readonly string[]): Promise<number> {
  const own = argv.indexOf('--') < 0 ? argv : argv.slice(0, argv.indexOf('--')); // `-- train --help` is the child's
  if (own.includes('--help') || own.includes('-h')) { console.log(USAGE); return 0; }
  let o: LaunchOptions;
  try { o = parseLaunchArgs(argv); } catch (e) { process.stderr.write(`${(e as Error).message}\n`); return 2; }
  const { file } = resolveCommand(o.command);
  if (file === process.execPath && o.command[0] !== 'node' && !existsSync(cliMainPath())) {
    process.stderr.write(`athanor launch: ${cliMainPath()} not found (run npm run build)\n`);
    return 2;
  }
  try { return await launch(o); } catch (e) { process.stderr.write(`${(e as Error).message}\n`); return 1; }
}

// Runnable directly: node dist/src/runtime/launcher.js --nproc-per-node 2 -- node script.js
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  launchMain(process.argv.slice(2)).then((c) => process.exit(c));
}
