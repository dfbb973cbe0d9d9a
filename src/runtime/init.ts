// initProcessGroup: find out who we are (launcher env, torchrun-style env, or mpirun) and
// build the world communicator. Socket backends rendezvous through the TCP store: every rank
// publishes its listening addresses under a per-init key prefix and dials every peer.
import os from 'node:os';
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { BackendRequest, Communicator } from './communicator.js';
import { DistError } from './communicator.js';
import { TcpStore, TcpStoreServer } from './tcp-store.js';
import { SocketMesh } from './socket-mesh.js';
import { SocketGroup, groupIdOf } from './socket-group.js';
import { DEFAULT_TUNING } from './collectives.js';
import type { Tuning } from './collectives.js';
import { MpiCommunicator, mpiInit, underMpirun } from './mpi.js';
import { EMULATE_ENV, parseLinkSpec, type LinkSpec } from './link-emulation.js';

export interface InitOptions {
  /** Default env ATHANOR_BACKEND or 'auto' (mpi under mpirun, else unix within a host / tcp across hosts). */
  backend?: BackendRequest;
  rank?: number;
  worldSize?: number;
  masterAddr?: string;
  masterPort?: number;
  /** Shared secret for the store and peer handshakes (default env ATHANOR_STORE_TOKEN). */
  token?: string;
  /** TCP bind address (default env ATHANOR_BIND_ADDR, else the interface that reaches the master). */
  bindAddr?: string;
  /** Address peers dial (default env ATHANOR_ADVERTISE_ADDR, else the bind address). */
  advertiseAddr?: string;
  /** Overrides the host id (hostname + boot id) used to pick the same-host transport (env ATHANOR_HOST_ID). */
  hostId?: string;
  /** Watchdog limit in seconds (default env ATHANOR_WATCHDOG_S or 300). */
  watchdogS?: number;
  watchdogAction?: 'throw' | 'exit';
  /** Rendezvous timeout in seconds (default env ATHANOR_RDZV_TIMEOUT_S or 300). */
  timeoutS?: number;
  /** Host the store in this process (default: rank 0 when no launcher hosts it). */
  hostStore?: boolean;
  tuning?: Partial<Tuning>;
  /** Store key prefix for this group's rendezvous (a second group in the same job, e.g. a communication thread, needs its own). */
  prefix?: string;
  /** Emulated network between socket ranks, for benchmarks and tests (default env ATHANOR_EMULATE_LINK; link-emulation.ts). */
  emulate?: LinkSpec;
}

export interface ProcessGroup extends Communicator {
  readonly worldSize: number;
  readonly localRank: number;
  readonly localWorldSize: number;
  /** Store client (null for the MPI backend and single-process runs). */
  readonly store: TcpStore | null;
  /** Where the store is (null with MPI or one process): a second group in this job, e.g. the communication thread's, joins through it. */
  readonly rendezvous: { host: string; port: number; token: string } | null;
}

const env = process.env;
let initCount = 0;

function envInt(names: string[]): number | undefined {
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v !== '') {
      const x = Number(v);
      if (!Number.isInteger(x) || x < 0) throw new DistError(`initProcessGroup: env ${n}='${v}' is not a non-negative integer`);
      return x;
    }
  }
  return undefined;
}

/** hostname + kernel boot id: equal ids mean the ranks can use Unix domain sockets. */
export function hostId(): string {
  if (env.ATHANOR_HOST_ID) return env.ATHANOR_HOST_ID;
  let boot = '';
  try { boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { /* not Linux */ }
  return `${os.hostname()}/${boot}`;
}

function pickInterfaceAddr(): string {
  for (const list of Object.values(os.networkInterfaces())) for (const i of list ?? []) if (i.family === 'IPv4' && !i.internal) return i.address;
  return '127.0.0.1';
}

export async function initProcessGroup(opts: InitOptions = {}): Promise<ProcessGroup> {
  const backend = (opts.backend ?? (env.ATHANOR_BACKEND as BackendRequest | undefined) ?? 'auto');
  if (!['auto', 'tcp', 'unix', 'mpi', 'local'].includes(backend)) throw new DistError(`initProcessGroup: unknown backend '${backend}' (expected auto, tcp, unix, mpi or local)`);
  const watchdogS = opts.watchdogS ?? (env.ATHANOR_WATCHDOG_S ? Number(env.ATHANOR_WATCHDOG_S) : 300);
  if (!(watchdogS > 0)) throw new DistError(`initProcessGroup: watchdog limit must be > 0 s (ATHANOR_WATCHDOG_S='${env.ATHANOR_WATCHDOG_S}')`);
  const timeoutMs = (opts.timeoutS ?? (env.ATHANOR_RDZV_TIMEOUT_S ? Number(env.ATHANOR_RDZV_TIMEOUT_S) : 300)) * 1000;
  const mpi = underMpirun();
  const pgIndex = initCount++;

  if (backend === 'mpi' || (backend === 'auto' && mpi)) {
    const world = MpiCommunicator.world({ watchdogS });
    MpiCommunicator.processWorld = world;
    return Object.assign(world, {
      worldSize: world.size,
      localRank: envInt(['OMPI_COMM_WORLD_LOCAL_RANK']) ?? 0,
      localWorldSize: envInt(['OMPI_COMM_WORLD_LOCAL_SIZE']) ?? 1,
      store: null,
      rendezvous: null,
    });
  }

  let rank = opts.rank ?? envInt(['ATHANOR_RANK', 'RANK', 'OMPI_COMM_WORLD_RANK']) ?? 0;
  let world = opts.worldSize ?? envInt(['ATHANOR_WORLD_SIZE', 'WORLD_SIZE', 'OMPI_COMM_WORLD_SIZE']) ?? 1;
  const localRank = envInt(['ATHANOR_LOCAL_RANK', 'LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_RANK']) ?? rank;
  const localWorldSize = envInt(['ATHANOR_LOCAL_WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_SIZE']) ?? world;
  if (rank >= world) throw new DistError(`initProcessGroup: rank ${rank} >= world size ${world}`);
  const tuning: Tuning = { ...DEFAULT_TUNING, ...opts.tuning };
  if (env.ATHANOR_DIRECT_MAX_BYTES) tuning.directMaxBytes = Number(env.ATHANOR_DIRECT_MAX_BYTES);
  const groupOpts = { watchdogS, watchdogAction: opts.watchdogAction ?? (env.ATHANOR_WATCHDOG_ACTION === 'exit' ? 'exit' as const : 'throw' as const), tuning };
  const hid = opts.hostId ?? hostId();

  let store: TcpStore | null = null;
  let server: TcpStoreServer | null = null;
  let token = opts.token ?? env.ATHANOR_STORE_TOKEN ?? '';
  let rendezvous: ProcessGroup['rendezvous'] = null;
  if (world > 1) {
    let addr = opts.masterAddr ?? env.ATHANOR_MASTER_ADDR ?? env.MASTER_ADDR;
    let port = opts.masterPort ?? envInt(['ATHANOR_MASTER_PORT', 'MASTER_PORT']);
    if (mpi && (addr === undefined || port === undefined)) {
      // Socket backends under mpirun: rank 0 hosts a store and tells the others through MPI.
      const m = mpiInit();
      rank = m.rank; world = m.size;
      const mw = MpiCommunicator.world({ watchdogS });
      const msg = new Uint8Array(512);
      if (rank === 0) {
        token ||= randomBytes(24).toString('hex');
        const single = env.OMPI_COMM_WORLD_LOCAL_SIZE === env.OMPI_COMM_WORLD_SIZE;
        server = await TcpStoreServer.start({ host: single ? '127.0.0.1' : '0.0.0.0', port: 0, token });
        msg.set(Buffer.from(JSON.stringify({ a: single ? '127.0.0.1' : pickInterfaceAddr(), p: server.port, t: token })));
      }
      await mw.broadcast(new Uint16Array(msg.buffer), 0);
      const info = JSON.parse(Buffer.from(msg).toString('utf8').replace(/\0+$/, '')) as { a: string; p: number; t: string };
      addr = info.a; port = info.p; token = info.t;
    } else {
      if (addr === undefined || port === undefined) throw new DistError(`initProcessGroup: rank ${rank} of ${world}: set ATHANOR_MASTER_ADDR and ATHANOR_MASTER_PORT (or start the job with 'athanor launch' or mpirun)`);
      if (!token) throw new DistError(`initProcessGroup: rank ${rank}: env ATHANOR_STORE_TOKEN is not set (the launcher generates it; for manual starts set the same secret on every rank)`);
      const hostIt = opts.hostStore ?? (rank === 0 && env.ATHANOR_STORE_HOSTED !== '1');
      if (hostIt && pgIndex === 0) server = await TcpStoreServer.start({ host: addr === 'localhost' || addr.startsWith('127.') ? addr : '0.0.0.0', port, token });
    }
    store = await TcpStore.connect({ host: addr, port: port!, token, connectTimeoutMs: timeoutMs });
    rendezvous = { host: addr, port: port!, token };
  }
  const prefix = opts.prefix ?? `athanor/pg${pgIndex}`;
  const emulate = opts.emulate ?? (env[EMULATE_ENV] ? parseLinkSpec(env[EMULATE_ENV]!) : undefined);
  const meshBackend = backend === 'local' || backend === 'auto' ? 'auto' : backend;
  const mesh = await SocketMesh.create({
    rank, world, store: store as TcpStore, prefix, token, backend: meshBackend, hostId: hid, timeoutMs,
    bindAddr: opts.bindAddr ?? env.ATHANOR_BIND_ADDR, advertiseAddr: opts.advertiseAddr ?? env.ATHANOR_ADVERTISE_ADDR,
    ...(emulate ? { emulate } : {}),
  });
  const ranks = [...Array(world).keys()];
  const created = new Map<string, number>([[ranks.join(','), 1]]);
  const group = new SocketGroup(mesh, ranks, 'world', groupIdOf(ranks, 1), groupOpts, null);
  (group as unknown as { created: Map<string, number> }).created = created;
  // Everyone has connected to everyone: make sure no rank starts before all have (a late
  // rank could otherwise see traffic on a group it has not created yet: harmless, but the
  // store server host must also outlive the rendezvous).
  if (store) await store.barrier(`${prefix}/ready`, world, timeoutMs);
  const origDestroy = group.destroy.bind(group);
  const pg = Object.assign(group, {
    worldSize: world, localRank, localWorldSize, store, rendezvous,
    destroy: async () => {
      await origDestroy();
      if (store) {
        // The store host waits (bounded) until every rank has left before closing the server.
        try {
          const n = await store.add(`${prefix}/exit/count`, 1);
          if (n === world) await store.set(`${prefix}/exit/done`, '1');
          if (server) await store.wait([`${prefix}/exit/done`], 30_000);
        } catch { /* peers gone */ }
        store.close();
      }
      if (server) await server.close();
    },
  });
  return pg;
}
