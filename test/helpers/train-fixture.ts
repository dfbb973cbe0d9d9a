// A tiny prepared corpus and config shared by the training tests (real files in a temp dir).
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { projectRoot } from '../../src/backend/native.js';
import { BpeTokenizer } from '../../src/text/index.js';
import { prepare } from '../../src/data/prepare.js';

let cached: string | null = null;

/** Prepares ~200 KB of the bundled corpus with a 384-token BPE (once per process). */
export async function tinyData(): Promise<string> {
  if (cached && existsSync(join(cached, 'train.idx'))) return cached;
  const dir = mkdtempSync(join(tmpdir(), 'athanor-data-'));
  const text = readFileSync(join(projectRoot(), 'data', 'demo', 'corpus.txt'), 'utf8').slice(0, 200_000);
  const src = join(dir, 'corpus.txt');
  writeFileSync(src, text);
  const tok = BpeTokenizer.trainSync(text.split('\n%\n'), { vocabSize: 384 });
  tok.save(join(dir, 'tokenizer.json'));
  await prepare({ inputs: [src], outDir: dir, tokenizer: tok, tokenizerPath: join(dir, 'tokenizer.json'), valFraction: 0.05 });
  cached = dir;
  return dir;
}

export function tinyArgs(dataDir: string, outDir: string): string[] {
  return [
    '--preset', 'gpt-tiny', `--data.dir=${dataDir}`, '--model.vocabSize=384', '--model.nLayer=2', '--model.dModel=32', '--model.nHead=2',
    '--model.dFF=128', '--model.seqLen=16', '--train.microBatch=8', '--train.steps=8', '--train.evalEvery=4', '--train.evalBatches=2',
    '--train.checkpointEvery=4', '--train.logEvery=1', '--train.threads=1', '--optim.warmupSteps=2', '--train.maxSeconds=0',
    `--train.outDir=${outDir}`,
  ];
}

export const CLI = join(projectRoot(), 'dist', 'src', 'cli', 'main.js');

export interface RunResult { code: number | null; signal: string | null; out: string }

export function runCli(args: string[], opts: { timeoutMs?: number; onLine?: (line: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ATHANOR_QUIET: '1', ATHANOR_WATCHDOG_S: '20' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let buf = '';
    const onData = (c: Buffer) => {
      out += c;
      buf += c;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        opts.onLine?.(line, child);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('close', (code, signal) => { clearTimeout(t); resolve({ code, signal, out }); });
  });
}

/** Training losses by step from a run's metrics.jsonl (the last record of each step wins, as after a resume). */
export function stepLosses(outDir: string): Map<number, number> {
  const m = new Map<number, number>();
  const path = join(outDir, 'metrics.jsonl');
  if (!existsSync(path)) return m;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line) as { kind: string; step: number; loss: number };
    if (r.kind === 'step') m.set(r.step, r.loss);
  }
  return m;
}

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `athanor-${prefix}-`));
}
