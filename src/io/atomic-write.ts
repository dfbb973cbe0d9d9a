// Every file Athanor writes that a later run depends on (checkpoints, shards,
// manifests, tokenizers) goes through here: write a temporary file beside the
// target, fsync it, rename over the target, fsync the directory. A crash at any
// point leaves either the old file or the new one, never a torn mix.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync, mkdirSync } from 'node:fs';
import { open, rename, unlink, mkdir } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';

type Chunk = Uint8Array | ArrayBufferView | string;

function asBytes(c: Chunk): Uint8Array {
  if (typeof c === 'string') return Buffer.from(c, 'utf8');
  if (c instanceof Uint8Array) return c;
  return new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
}

function tmpName(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}.tmp`);
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* some filesystems refuse directory fsync; the rename is still atomic */ }
}

/** Atomically replaces `path` with the concatenation of `chunks`. */
export function atomicWriteFileSync(path: string, chunks: Chunk | Chunk[]): void {
  atomicWriteStreamSync(path, (put) => { for (const c of Array.isArray(chunks) ? chunks : [chunks]) put(asBytes(c)); });
}

/**
 * Atomically replaces `path` with whatever `write` hands to `put`, in order: for files
 * produced piece by piece (a checkpoint streamed from an offload file) that should never
 * be held in memory whole.
 */
export function atomicWriteStreamSync<T>(path: string, write: (put: (b: Uint8Array) => void) => T): T {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tmpName(path);
  const fd = openSync(tmp, 'w');
  let result: T;
  try {
    result = write((b) => {
      let off = 0;
      while (off < b.byteLength) off += writeSync(fd, b, off, b.byteLength - off);
    });
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  fsyncDir(dirname(path));
  return result;
}

/** Async variant, for large shards written while training goes on. */
export async function atomicWriteFile(path: string, chunks: Chunk | Chunk[]): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tmpName(path);
  const fh = await open(tmp, 'w');
  try {
    for (const c of Array.isArray(chunks) ? chunks : [chunks]) {
      const b = asBytes(c);
      let off = 0;
      while (off < b.byteLength) off += (await fh.write(b, off, b.byteLength - off)).bytesWritten;
    }
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  fsyncDir(dirname(path));
}
