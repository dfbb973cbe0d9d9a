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
import { closeSync, openSync, readlinkSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { koffi } from '../backend/native.js';

/** Bytes at the region's start that hold the nonce (the client allocates after them). */
export const SHM_NONCE_BYTES = 64;
/** Largest region a server agrees to map. */
export const SHM_MAX_BYTES = 1 << 30;

interface Libc {
  mmap(addr: null, len: number, prot: number, flags: number, fd: number, off: number): unknown;
  munmap(addr: unknown, len: number): number;
  posix_fallocate(fd: number, off: number, len: number): number;
}

let libc: Libc | null | undefined;
function lib(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  const k = koffi();
  if (!k || process.platform !== 'linux') return null;
  try {
    const l = k.load('libc.so.6');
    libc = {
      mmap: l.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
      munmap: l.func('int munmap(void *addr, size_t len)'),
      posix_fallocate: l.func('int posix_fallocate(int fd, int64_t off, int64_t len)'),
    } as Libc;
  } catch {
    libc = null;
  }
  return libc;
}

export interface ShmMapping {
  bytes: Uint8Array;
  /** Releases the mapping; no view of `bytes` may be used afterwards. */
  unmap(): void;
}

function mapFd(l: Libc, fd: number, len: number): ShmMapping | null {
  const PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;
  const p = l.mmap(null, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const k = koffi()!;
  const addr = BigInt(k.address(p) as bigint | number);
  if (p === null || addr === 0n || addr === 0xffffffffffffffffn) return null; // MAP_FAILED
  const bytes = new Uint8Array(k.view(p, len) as ArrayBuffer);
  let mapped = true;
  return { bytes, unmap: () => { if (mapped) { mapped = false; l.munmap(p, len); } } };
}

/** The client's side: a fresh region of `bytes` bytes, or null where shared memory is unavailable. */
export interface ShmRegion { map: ShmMapping; pid: number; fd: number; nonce: string }

export function createShmRegion(bytes: number, dir = '/dev/shm'): ShmRegion | null {
  const l = lib();
  if (!l || bytes <= SHM_NONCE_BYTES || bytes > SHM_MAX_BYTES) return null;
  const path = `${dir}/athanor-emb-${process.pid}-${randomBytes(8).toString('hex')}`;
  let fd = -1;
  try {
    fd = openSync(path, 'wx+', 0o600);
    unlinkSync(path);
    // Reserve every page now: a full tmpfs (a container's 64 MB /dev/shm) then fails here, and
    // the client stays on the socket, instead of a SIGBUS at the first write to a missing page.
    if (l.posix_fallocate(fd, 0, bytes) !== 0) { closeSync(fd); return null; }
    const map = mapFd(l, fd, bytes);
    if (!map) { closeSync(fd); return null; }
    const nonce = randomBytes(16);
    map.bytes.set(nonce, 0);
    return { map, pid: process.pid, fd, nonce: nonce.toString('hex') };
  } catch {
    if (fd >= 0) { try { closeSync(fd); } catch { /* already closed */ } }
    return null;
  }
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
  const l = lib();
  if (!l) throw new Error('shm-attach: shared memory is unavailable on this server (no koffi/libc or not Linux)');
  // Only a region made by createShmRegion in that very process: an authenticated client must
  // not get the server to map (and write into) any other file a process of this user has open.
  let target = '';
  try { target = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch (e) { throw new Error(`shm-attach: cannot see the client's region (${(e as Error).message}): not on the same host?`); }
  if (!new RegExp(`^/dev/shm/athanor-emb-${pid}-[0-9a-f]{16} \\(deleted\\)$`).test(target)) throw new Error(`shm-attach: pid ${pid} fd ${fd} is not an embedding-client region`);
  let f: number;
  try { f = openSync(`/proc/${pid}/fd/${fd}`, 'r+'); } catch (e) { throw new Error(`shm-attach: cannot open the client's region (${(e as Error).message}): not on the same host?`); }
  let map: ShmMapping | null;
  try { map = mapFd(l, f, bytes); } finally { closeSync(f); }
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
