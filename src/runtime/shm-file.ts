// Shared memory between processes of one host: a tmpfs file unlinked at once (nothing is
// left behind if its owner is killed) and kept by its descriptor; another process of the
// same host maps it through /proc/<pid>/fd/<fd>, which exists only there. Used by the
// tensor-parallel collectives (shm-collectives.ts) and the embedding clients
// (recsys/shm-region.ts). mmap comes from libc through koffi (Linux only); elsewhere
// `shmLibc` returns null and callers keep their socket or thread path.
import { closeSync, openSync, readlinkSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { koffi } from '../backend/native.js';

export interface ShmLibc {
  mmap(addr: null, len: number, prot: number, flags: number, fd: number, off: number): unknown;
  munmap(addr: unknown, len: number): number;
  posix_fallocate(fd: number, off: number, len: number): number;
  /** libc's variadic syscall(2) (the collectives' futex). */
  syscall(...args: unknown[]): number | bigint;
}

let libc: ShmLibc | null | undefined;
export function shmLibc(): ShmLibc | null {
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
      syscall: l.func('long syscall(long number, ...)'),
    } as ShmLibc;
  } catch {
    libc = null;
  }
  return libc;
}

export interface SharedMapping {
  ptr: unknown;
  addr: bigint;
  buf: ArrayBuffer;
  /** Releases the mapping; no view of `buf` may be used afterwards. */
  unmap(): void;
}

/** Maps `bytes` bytes of an open file shared (read + write), or null when mmap fails. */
export function mapShared(l: ShmLibc, fd: number, bytes: number): SharedMapping | null {
  const PROT_READ = 1, PROT_WRITE = 2, MAP_SHARED = 1;
  const p = l.mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const k = koffi()!;
  const addr = p === null ? 0n : BigInt(k.address(p) as bigint | number);
  if (addr === 0n || addr === 0xffffffffffffffffn) return null; // MAP_FAILED
  const buf = k.view(p, bytes) as ArrayBuffer;
  let mapped = true;
  return { ptr: p, addr, buf, unmap: () => { if (mapped) { mapped = false; l.munmap(p, bytes); } } };
}

/**
 * A fresh region of `bytes` bytes in `${dir}/${prefix}-<pid>-<16 hex>` (unlinked at once),
 * or null where it cannot be made. Every page is reserved now: a full tmpfs (a container's
 * 64 MB /dev/shm) fails here, and the caller keeps its other path, instead of a SIGBUS at
 * the first write to a missing page.
 */
export function createShmFile(l: ShmLibc, prefix: string, bytes: number, dir = '/dev/shm'): { fd: number; map: SharedMapping } | null {
  const path = `${dir}/${prefix}-${process.pid}-${randomBytes(8).toString('hex')}`;
  let fd = -1;
  try {
    fd = openSync(path, 'wx+', 0o600);
    unlinkSync(path);
    if (l.posix_fallocate(fd, 0, bytes) !== 0) { closeSync(fd); return null; }
    const map = mapShared(l, fd, bytes);
    if (!map) { closeSync(fd); return null; }
    return { fd, map };
  } catch {
    if (fd >= 0) { try { closeSync(fd); } catch { /* already closed */ } }
    return null;
  }
}

/** What /proc/<pid>/fd/<fd> points at for a region createShmFile made with this prefix. */
export function shmFilePattern(prefix: string, pid: number | string = '\\d+'): RegExp {
  return new RegExp(`^/dev/shm/${prefix}-${pid}-[0-9a-f]{16} \\(deleted\\)$`);
}

/** Opens another process's descriptor through /proc (same host only), maps it, closes the extra descriptor. */
export function mapPeerFile(l: ShmLibc, pid: number, fd: number, bytes: number): SharedMapping | null {
  const f = openSync(`/proc/${pid}/fd/${fd}`, 'r+');
  try { return mapShared(l, f, bytes); } finally { closeSync(f); }
}

/** Where /proc/<pid>/fd/<fd> points (throws when that process or descriptor is not visible here). */
export const peerFileTarget = (pid: number, fd: number): string => readlinkSync(`/proc/${pid}/fd/${fd}`);
