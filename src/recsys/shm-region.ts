// Shared memory between an embedding client and a server on the same host, so that
// lookup answers and gradient pushes skip the socket: the client encodes its request
// straight into the region, the server decodes it in place and gathers the answer rows
// straight into the region, and only 16-byte descriptors travel over the connection.
//
// The client creates a tmpfs file, unlinks it at once (nothing is left behind if it is
// killed) and keeps the descriptor open; the server maps the same file through
// /proc/<client pid>/fd/<fd>, which exists only on the client's host. A random nonce that
// the client wrote at the start of the region proves the server mapped the right file, so a
// server on another host (or one that cannot open it) refuses, and the client stays on the
// socket. mmap comes from libc through koffi (Linux only); elsewhere both sides say no.
import { randomBytes } from 'node:crypto';
import { createShmFile, mapPeerFile, peerFileTarget, shmFilePattern, shmLibc, type SharedMapping } from '../runtime/shm-file.js';

/** Bytes at the region's start that hold the nonce (the client allocates after them). */
export const SHM_NONCE_BYTES = 64;
/** Largest region a server agrees to map. */
export const SHM_MAX_BYTES = 1 << 30;

export interface ShmMapping {
  bytes: Uint8Array;
  /** Releases the mapping; no view of `bytes` may be used afterwards. */
  unmap(): void;
}

const asMapping = (m: SharedMapping, len: number): ShmMapping => ({ bytes: new Uint8Array(m.buf, 0, len), unmap: m.unmap });

const PREFIX = 'athanor-emb';

/** The client's side: a fresh region of `bytes` bytes, or null where shared memory is unavailable. */
export interface ShmRegion { map: ShmMapping; pid: number; fd: number; nonce: string }

export function createShmRegion(bytes: number, dir = '/dev/shm'): ShmRegion | null {
  const l = shmLibc();
  if (!l || bytes <= SHM_NONCE_BYTES || bytes > SHM_MAX_BYTES) return null;
  const made = createShmFile(l, PREFIX, bytes, dir);
  if (!made) return null;
  const map = asMapping(made.map, bytes);
  const nonce = randomBytes(16);
  map.bytes.set(nonce, 0);
  return { map, pid: process.pid, fd: made.fd, nonce: nonce.toString('hex') };
}

/** The server's side: maps a client's region; throws (naming what failed) unless it is the client's file. */
export function attachShmRegion(o: { pid?: unknown; fd?: unknown; bytes?: unknown; nonce?: unknown }): ShmMapping {
  const int = (v: unknown, what: string, max: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new Error(`shm-attach: field '${what}' must be an integer in [0, ${max}] (got ${JSON.stringify(v)})`);
    return v;
  };
  const pid = int(o.pid, 'pid', 0x7fffffff), fd = int(o.fd, 'fd', 0x7fffffff), bytes = int(o.bytes, 'bytes', SHM_MAX_BYTES);
  if (bytes <= SHM_NONCE_BYTES) throw new Error(`shm-attach: field 'bytes' must exceed ${SHM_NONCE_BYTES}`);
  if (typeof o.nonce !== 'string' || !/^[0-9a-f]{32}$/.test(o.nonce)) throw new Error(`shm-attach: field 'nonce' must be 32 hex digits`);
  const l = shmLibc();
  if (!l) throw new Error('shm-attach: shared memory is unavailable on this server (no koffi/libc or not Linux)');
  // Only a region made by createShmRegion in that very process: an authenticated client must
  // not get the server to map (and write into) any other file a process of this user has open.
  let target = '';
  try { target = peerFileTarget(pid, fd); } catch (e) { throw new Error(`shm-attach: cannot see the client's region (${(e as Error).message}): not on the same host?`); }
  if (!shmFilePattern(PREFIX, pid).test(target)) throw new Error(`shm-attach: pid ${pid} fd ${fd} is not an embedding-client region`);
  let shared: SharedMapping | null;
  try { shared = mapPeerFile(l, pid, fd, bytes); } catch (e) { throw new Error(`shm-attach: cannot open the client's region (${(e as Error).message}): not on the same host?`); }
  const map = shared ? asMapping(shared, bytes) : null;
  if (!map) throw new Error('shm-attach: mmap failed');
  if (Buffer.from(map.bytes.subarray(0, 16)).toString('hex') !== o.nonce) {
    map.unmap();
    throw new Error('shm-attach: the region does not carry the client\'s nonce: not the same host or file');
  }
  return map;
}

/**
 * FIFO allocator over the region (after the nonce): requests on one connection are
 * answered in order, so blocks are taken at the head and come back at the tail; a block
 * freed out of order is reclaimed once those before it are. 8-aligned offsets.
 */
export class ShmRing {
  private readonly live: Array<{ off: number; end: number; freed: boolean }> = [];
  constructor(readonly size: number, private readonly start = SHM_NONCE_BYTES) {}

  /** Offset of a block of n bytes, or -1 when it does not fit now. */
  alloc(n: number): number {
    n = (n + 63) & ~63;
    let off = -1;
    if (this.live.length === 0) off = this.start + n <= this.size ? this.start : -1;
    else {
      const first = this.live[0]!, last = this.live[this.live.length - 1]!;
      if (last.end >= first.off) { // not wrapped: room after the last block, else before the first
        if (last.end + n <= this.size) off = last.end;
        else if (this.start + n <= first.off) off = this.start;
      } else if (last.end + n <= first.off) off = last.end;
    }
    if (off >= 0) this.live.push({ off, end: off + n, freed: false });
    return off;
  }

  free(off: number): void {
    const b = this.live.find((x) => x.off === off && !x.freed);
    if (!b) throw new Error(`shm ring: no live block at ${off}`);
    b.freed = true;
    while (this.live.length > 0 && this.live[0]!.freed) this.live.shift();
  }

  get liveBlocks(): number { return this.live.length; }
}
