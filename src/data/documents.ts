// Streams the documents of one input file: a .jsonl line per document, or a
// plain-text file cut at separators. Reads line by line, so memory is bounded
// by the longest document, not the file.
import { open } from 'node:fs/promises';

/**
 * How plain text is cut into documents:
 * - 'auto': per file, `%` lines when the file's first 256 KiB has one (fortune
 *   format, where blank-line runs occur inside fortunes), else runs of 2+ blank lines
 * - 'percent': only `%` lines
 * - 'blank-lines': only runs of 2+ blank lines
 * - 'paragraph': any blank line
 * - 'line': every non-blank line is a document
 * - 'file': the whole file is one document
 */
export type DocSeparator = 'auto' | 'percent' | 'blank-lines' | 'paragraph' | 'line' | 'file';
export type InputFormat = 'auto' | 'text' | 'jsonl';

export interface DocumentReadOptions {
  format?: InputFormat;
  /** Field holding the text in .jsonl records (default 'text'). */
  jsonField?: string;
  docSeparator?: DocSeparator;
  /** Remove ANSI escape sequences such as `\x1b[31m` (default true; Debian's fortunes-zh has them). */
  stripAnsi?: boolean;
  /** Called with the size of each chunk read from disk. */
  onBytes?: (bytes: number) => void;
}

// CSI sequences: ESC [ params intermediates final (colours are `ESC[...m`).
// The final byte is optional because fortunes-zh has truncated ones
// (`ESC[;ESC[34;1m`); any other stray ESC goes too.
const ANSI_RE = /\x1b(?:\[[0-9;:?<=>]*[ -/]*[@-~]?)?/g;

export function stripAnsiCodes(s: string): string {
  return s.includes('\x1b') ? s.replace(ANSI_RE, '') : s;
}

export function detectFormat(file: string, format: InputFormat = 'auto'): 'text' | 'jsonl' {
  if (format !== 'auto') return format;
  const lower = file.toLowerCase();
  return lower.endsWith('.jsonl') || lower.endsWith('.ndjson') ? 'jsonl' : 'text';
}

// Lines come in batches (one per 1 MiB read) so the per-line cost is a
// synchronous loop, not an await; split on LF bytes (never inside a UTF-8
// sequence), a CR before the LF dropped, a leading BOM dropped.
async function* lineBatches(file: string, onBytes?: (n: number) => void): AsyncGenerator<string[]> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new Error(`${file}: cannot read input file: ${(e as Error).message}`);
  }
  const buf = Buffer.allocUnsafe(1 << 20);
  let carry: Buffer | undefined;
  let position = 0;
  let bomChecked = false;
  const fixFirst = (out: string[]): void => {
    if (!bomChecked && out.length > 0) {
      bomChecked = true;
      if (out[0]!.charCodeAt(0) === 0xfeff) out[0] = out[0]!.slice(1);
    }
  };
  try {
    for (;;) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await fh.read(buf, 0, buf.length, position));
      } catch (e) {
        throw new Error(`${file}: cannot read input file: ${(e as Error).message}`);
      }
      if (bytesRead === 0) break;
      position += bytesRead;
      onBytes?.(bytesRead);
      let data = buf.subarray(0, bytesRead);
      if (carry) { data = Buffer.concat([carry, data]); carry = undefined; }
      const out: string[] = [];
      let start = 0;
      for (;;) {
        const nl = data.indexOf(10, start);
        if (nl < 0) break;
        const end = nl > start && data[nl - 1] === 13 ? nl - 1 : nl;
        out.push(data.toString('utf8', start, end));
        start = nl + 1;
      }
      // `buf` is reused by the next read, so the unfinished line is copied out.
      if (start < data.length) carry = Buffer.from(data.subarray(start));
      if (out.length > 0) {
        fixFirst(out);
        yield out;
      }
    }
    if (carry && carry.length > 0) {
      const end = carry[carry.length - 1] === 13 ? carry.length - 1 : carry.length;
      const out = [carry.toString('utf8', 0, end)];
      fixFirst(out);
      yield out;
    }
  } finally {
    await fh.close().catch(() => undefined);
  }
}

async function* jsonlDocuments(file: string, o: DocumentReadOptions): AsyncGenerator<string> {
  const field = o.jsonField ?? 'text';
  const strip = o.stripAnsi ?? true;
  let lineNo = 0;
  for await (const batch of lineBatches(file, o.onBytes)) for (const line of batch) {
    lineNo++;
    if (line.trim() === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new Error(`${file}:${lineNo}: invalid JSON: ${(e as Error).message}`);
    }
    const text = rec !== null && typeof rec === 'object' ? (rec as Record<string, unknown>)[field] : undefined;
    if (typeof text !== 'string') {
      throw new Error(`${file}:${lineNo}: field '${field}' is missing or not a string`);
    }
    const doc = strip ? stripAnsiCodes(text) : text;
    if (doc.trim() !== '') yield doc;
  }
}

const SNIFF_BYTES = 256 * 1024;

/** 'percent' if a line of the file's head is only `%`, else 'blank-lines'. */
async function sniffSeparator(file: string): Promise<'percent' | 'blank-lines'> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    throw new Error(`${file}: cannot read input file: ${(e as Error).message}`);
  }
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
    const head = buf.subarray(0, bytesRead).toString('utf8');
    return /(^|\n)%[ \t\r]*(\n|$)/.test(head) ? 'percent' : 'blank-lines';
  } catch (e) {
    throw new Error(`${file}: cannot read input file: ${(e as Error).message}`);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

async function* textDocuments(file: string, o: DocumentReadOptions): AsyncGenerator<string> {
  let mode = o.docSeparator ?? 'auto';
  if (mode === 'auto') mode = await sniffSeparator(file);
  const strip = o.stripAnsi ?? true;
  const percent = mode === 'percent';
  const blankRunToSplit = mode === 'blank-lines' ? 2 : mode === 'paragraph' ? 1 : Infinity;
  let doc: string[] = [];
  let blanks = 0;
  let split = false; // the current blank run already ended a document
  const take = (): string | undefined => {
    const text = doc.length > 0 ? doc.join('\n') : undefined;
    doc = [];
    return text;
  };
  for await (const batch of lineBatches(file, o.onBytes)) for (const raw of batch) {
    const line = strip ? stripAnsiCodes(raw) : raw;
    if (mode === 'line') {
      if (line.trim() !== '') yield line;
      continue;
    }
    if (percent && line.trimEnd() === '%') {
      const t = take();
      if (t !== undefined) yield t;
      blanks = 0; split = false;
      continue;
    }
    if (line.trim() === '') {
      blanks++;
      if (blanks >= blankRunToSplit && !split) {
        const t = take();
        if (t !== undefined) yield t;
        split = true;
      }
      continue;
    }
    // Blank lines inside a document (shorter than a separator run) are kept.
    if (doc.length > 0 && !split) for (let i = 0; i < blanks; i++) doc.push('');
    blanks = 0; split = false;
    doc.push(line);
  }
  const t = take();
  if (t !== undefined) yield t;
}

/** The documents of `file`, in order; empty documents are skipped. */
export function readDocuments(file: string, options: DocumentReadOptions = {}): AsyncGenerator<string> {
  return detectFormat(file, options.format) === 'jsonl' ? jsonlDocuments(file, options) : textDocuments(file, options);
}
