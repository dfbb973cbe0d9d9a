// Progress reporting: a live bar on a terminal, plain log lines otherwise, and
// every metric also appended to a JSONL file for plotting and comparisons.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fmtMemory } from './memory-sample.js';

export interface StepMetrics {
  step: number;
  loss: number;
  lr: number;
  tokensPerSec: number;
  mfu: number;
  gradNorm: number;
  seconds: number;
  valLoss?: number;
  skipped?: boolean;
  /** fp16 dynamic loss scale in use for this step. */
  lossScale?: number;
  /** Pipeline bubble: measured idle fraction of the step and (p-1)/(v·m+p-1). */
  bubble?: number;
  bubbleTheory?: number;
  /** MoE routing (src/train/moe-step.ts). */
  moe?: import('./moe-step.js').MoeStepMetrics;
  /** Measured memory, on logged steps only (memory-sample.ts). */
  mem?: import('./memory-sample.js').MemorySample;
}

export class Progress {
  private readonly tty: boolean;
  private readonly quiet: boolean;
  private lastLine = 0;
  private readonly start = Date.now();

  constructor(private readonly totalSteps: number, private readonly metricsPath: string | null, opts: { tty?: boolean; quiet?: boolean } = {}) {
    this.quiet = Boolean(opts.quiet);
    this.tty = !this.quiet && (opts.tty ?? Boolean(process.stderr.isTTY));
    if (metricsPath) mkdirSync(dirname(metricsPath), { recursive: true });
  }

  record(kind: string, fields: Record<string, unknown>): void {
    if (!this.metricsPath) return;
    appendFileSync(this.metricsPath, JSON.stringify({ kind, time: Date.now() / 1000, ...fields }) + '\n');
  }

  step(m: StepMetrics, logEvery: number, startStep: number): void {
    this.record('step', { ...m });
    if (this.quiet) return;
    const done = m.step - startStep;
    const rate = done / Math.max(1e-9, (Date.now() - this.start) / 1000);
    const eta = rate > 0 ? (this.totalSteps - m.step) / rate : 0;
    const text = `step ${m.step}/${this.totalSteps} loss ${m.loss.toFixed(4)} lr ${m.lr.toExponential(2)} ${Math.round(m.tokensPerSec)} tok/s MFU ${(100 * m.mfu).toFixed(1)}% ETA ${fmtTime(eta)}${m.bubble !== undefined ? ` bubble ${(100 * m.bubble).toFixed(1)}% (theory ${(100 * m.bubbleTheory!).toFixed(1)}%)` : ''}${m.moe ? ` | moe drop ${(100 * m.moe.dropRate).toFixed(1)}% load max/mean ${m.moe.maxLoad.toFixed(2)} aux ${m.moe.auxLoss.toExponential(2)} H ${m.moe.entropy.toFixed(2)}` : ''}${m.mem ? fmtMemory(m.mem) : ''}${m.skipped ? ' (skipped: non-finite)' : ''}`;
    if (this.tty) {
      const width = 24, filled = Math.round((width * m.step) / this.totalSteps);
      const bar = '█'.repeat(filled) + '░'.repeat(Math.max(0, width - filled));
      const now = Date.now();
      if (now - this.lastLine > 100 || m.step === this.totalSteps) {
        process.stderr.write(`\r\x1b[2K${bar} ${text}`);
        this.lastLine = now;
      }
    } else if (m.step % logEvery === 0 || m.step === this.totalSteps || m.skipped) {
      console.log(text);
    }
  }

  /** A line that must stay visible (evaluation, checkpoint, warnings). */
  log(msg: string): void {
    if (this.quiet) return;
    if (this.tty) process.stderr.write('\r\x1b[2K');
    console.log(msg);
  }

  end(): void {
    if (this.tty) process.stderr.write('\n');
  }
}

export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}
