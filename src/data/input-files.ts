// Turns the inputs of `prepare` (files, folders, `*`/`**` globs) into an
// ordered, de-duplicated list of files. Order is deterministic (sorted walks)
// because document order decides the token stream.
import { readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { isAbsolute, join, resolve, sep } from 'node:path';

/** Extensions never read as text when found by a folder walk or a glob. */
const BINARY_EXTENSIONS = new Set([
  '.dat', // strfile indexes next to fortune files
  '.bin', '.idx', '.gz', '.bz2', '.xz', '.zst', '.zip', '.tar', '.7z', '.png', '.jpg', '.jpeg', '.gif',
  '.pdf', '.pyc', '.o', '.so', '.a', '.dll', '.exe', '.safetensors', '.pt', '.npy', '.parquet',
]);

/** Default filter for files found by walks/globs: no hidden files, no known binary formats. */
export function defaultIncludeFile(path: string): boolean {
  const name = path.slice(path.lastIndexOf('/') + 1);
  if (name.startsWith('.')) return false;
  const dot = name.lastIndexOf('.');
  return dot <= 0 || !BINARY_EXTENSIONS.has(name.slice(dot).toLowerCase());
}

export function hasGlob(pattern: string): boolean { return /[*?]/.test(pattern); }

/** `**` spans any number of folders (zero included), `*` and `?` stay inside one name. */
export function globToRegExp(pattern: string): RegExp {
  const p = pattern.split(sep).join('/');
  let re = '';
  for (let i = 0; i < p.length; i++) {
    const ch = p[i]!;
    if (ch === '*') {
      if (p[i + 1] === '*') {
        const atStart = i === 0 || p[i - 1] === '/';
        if (atStart && p[i + 2] === '/') { re += '(?:[^/]*/)*'; i += 2; continue; }
        if (atStart && i + 2 === p.length) { re += '.*'; i += 1; continue; }
        re += '[^/]*'; i += 1; continue; // `a**b` behaves like `a*b`
      }
      re += '[^/]*';
    } else if (ch === '?') {
      re += '[^/]';
    } else {
      re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${re}$`);
}

function statOrThrow(path: string, input: string): Stats {
  try {
    return statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new Error(`prepare: input path not found: ${input}`);
    throw new Error(`prepare: cannot stat input ${input}: ${err.message}`);
  }
}

/** Files under dir (recursively, following links, each real folder once), sorted by name. */
function walk(dir: string, out: string[], seenDirs: Set<string>, maxDepth = Infinity, depth = 0): void {
  let real: string;
  try { real = realpathSync(dir); } catch { return; }
  if (seenDirs.has(real)) return;
  seenDirs.add(real);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new Error(`prepare: cannot list folder ${dir}: ${(e as Error).message}`);
  }
  names.sort();
  for (const name of names) {
    const p = join(dir, name);
    let st: Stats;
    try { st = statSync(p); } catch { continue; } // dangling link
    if (st.isDirectory()) {
      if (depth + 1 < maxDepth && !name.startsWith('.')) walk(p, out, seenDirs, maxDepth, depth + 1);
    } else if (st.isFile()) {
      out.push(p);
    }
  }
}

function expandGlob(pattern: string): string[] {
  const abs = resolve(pattern).split(sep).join('/');
  const parts = abs.split('/');
  let k = 0;
  while (k < parts.length && !hasGlob(parts[k]!)) k++;
  const base = parts.slice(0, k).join('/') || '/';
  const rest = parts.slice(k).join('/');
  const re = globToRegExp(rest);
  const maxDepth = rest.includes('**') ? Infinity : parts.length - k;
  let st: Stats;
  try { st = statSync(base); } catch { return []; }
  if (!st.isDirectory()) return [];
  const files: string[] = [];
  walk(base, files, new Set(), maxDepth);
  const prefix = base.endsWith('/') ? base : `${base}/`;
  return files.filter((f) => re.test(f.split(sep).join('/').slice(prefix.length)));
}

export interface ExpandOptions {
  /** Filter for files found inside folders or by globs (explicit files are always kept). */
  include?: (path: string) => boolean;
}

/**
 * Resolves inputs to absolute file paths in a stable order: inputs in the order
 * given, files of a folder or glob sorted; a file reached twice (links, overlapping
 * inputs) is kept at its first position. Missing paths and empty globs throw.
 */
export function expandInputs(inputs: readonly string[], options: ExpandOptions = {}): string[] {
  const include = options.include ?? defaultIncludeFile;
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (p: string): void => {
    let real: string;
    try { real = realpathSync(p); } catch { real = p; }
    if (!seen.has(real)) { seen.add(real); out.push(p); }
  };
  if (inputs.length === 0) throw new Error('prepare: no input paths given');
  for (const input of inputs) {
    if (hasGlob(input)) {
      const files = expandGlob(input).filter(include);
      if (files.length === 0) throw new Error(`prepare: glob matched no files: ${input}`);
      files.forEach(add);
      continue;
    }
    const abs = isAbsolute(input) ? input : resolve(input);
    const st = statOrThrow(abs, input);
    if (st.isDirectory()) {
      const files: string[] = [];
      walk(abs, files, new Set());
      const kept = files.filter(include);
      if (kept.length === 0) throw new Error(`prepare: folder contains no input files: ${input}`);
      kept.forEach(add);
    } else {
      add(abs);
    }
  }
  return out;
}
