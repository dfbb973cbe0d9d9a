// Renders benchmark results as markdown: one table per benchmark (Athanor vs its
// peer, ratio > 1 meaning Athanor is better) and the whole-run report that
// run-all.ts writes next to its JSON, ready to paste into BENCHMARKS.md.
import type { MachineInfo } from './machine-info.js';

export type Cell = string | number | null | undefined;

/** One row of a report table: Athanor's number, the peer's, and a ratio where > 1 means Athanor is better. */
export interface Row { case: string; unit: string; athanor: Cell; peer: Cell; ratio: Cell; notes?: string }
export interface Table { title: string; peer: string; about: string; rows: Row[] }

function fmtNum(v: Cell): string {
  if (v === null || v === undefined) return '–';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? Math.round(v).toLocaleString('en-US') : a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.1 || a === 0 ? v.toFixed(2) : v.toPrecision(2);
}

const fmtRatio = (v: Cell): string => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(2) : v === null || v === undefined ? '–' : String(v));
export const fmtLoad = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' / ');
const fmtBusy = (v: number | null | undefined): string => (typeof v === 'number' ? v.toFixed(2) : 'unknown');
const esc = (s: string): string => s.replace(/\|/g, '\\|');

export function tableMd(t: Table): string {
  const notes = t.rows.some((r) => r.notes);
  const head = ['case', 'unit', 'Athanor', `peer: ${t.peer}`, 'ratio', ...(notes ? ['notes'] : [])];
  const lines = [`| ${head.map(esc).join(' | ')} |`, `|${head.map((_, i) => (i >= 2 && i <= 4 ? '---:' : '---')).join('|')}|`];
  for (const r of t.rows) {
    const cells = [r.case, r.unit, fmtNum(r.athanor), fmtNum(r.peer), fmtRatio(r.ratio), ...(notes ? [r.notes ?? ''] : [])];
    lines.push(`| ${cells.map(esc).join(' | ')} |`);
  }
  return lines.join('\n');
}

export interface BenchRecord {
  name: string;
  title: string;
  status: 'ok' | 'failed';
  seconds: number;
  loadBefore: number[];
  loadAfter: number[];
  /** CPUs kept busy by other processes just before and just after (sampleBusyCpus). */
  busyBefore?: number | null;
  busyAfter?: number | null;
  /** Either sample exceeded the run's threshold: the numbers are disturbed, not headline material. */
  loaded?: boolean;
  error?: string;
  result?: unknown;
  tables?: Table[];
}

export function machineMd(m: MachineInfo, loadBefore: number[], loadAfter: number[] | null): string {
  return [
    `- Machine: ${m.cpuModel}${m.isa?.length ? ` [${m.isa.join(' ')}]` : ''}; ${m.logicalCpus} logical CPUs${m.physicalCores ? ` (${m.physicalCores} physical cores)` : ''}${m.cgroupCpuLimit ? `, limited to ${m.cgroupCpuLimit}` : ''}; ${m.memoryGiB} GiB RAM; ${m.kernel}`,
    `- Load average (1/5/15 min): ${fmtLoad(loadBefore)} before${loadAfter ? `, ${fmtLoad(loadAfter)} after` : ''}`,
    `- Software: Node ${m.node}; ${m.openblas ?? 'OpenBLAS not found'}; ${m.torch ? `PyTorch ${m.torch} (Python ${m.python})` : `PyTorch not available (${m.torchUnavailable})`}; Athanor native kernels ${m.nativeKernels === null ? 'unknown' : m.nativeKernels ? 'built' : 'NOT built (TypeScript reference kernels)'}${m.git ? `; commit ${m.git}` : ''}`,
  ].join('\n');
}

export interface LoadPolicy { maxBusyCpus: number; allowed: boolean }

export function reportMd(o: { stamp: string; quick: boolean; argv: string[]; machine: MachineInfo; loadBefore: number[]; loadAfter: number[]; benches: BenchRecord[]; load?: LoadPolicy }): string {
  const loaded = o.benches.filter((b) => b.loaded);
  const out = [
    `## Benchmark run ${o.stamp}${o.quick ? ' (--quick: fewer sizes and reps, indicative only)' : ''}${loaded.length ? ' (LOADED: other processes were busy; not for headline figures)' : ''}`,
    '',
    machineMd(o.machine, o.loadBefore, o.loadAfter),
    ...(o.load ? [`- Other processes' CPU use (sampled 1 s before and after each benchmark): threshold ${o.load.maxBusyCpus} CPUs; ${loaded.length ? `exceeded for ${loaded.map((b) => b.name).join(', ')}${o.load.allowed ? ' (run with --allow-load)' : ''}` : 'never exceeded'}`] : []),
    `- Command: \`node dist/bench/run-all.js${o.argv.length ? ` ${o.argv.join(' ')}` : ''}\`; benchmarks: ${o.benches.map((b) => b.name).join(', ')}`,
    '- Ratio: > 1 means Athanor is better (higher throughput, or less time where the unit is a time); "–" where there is no peer.',
    '',
  ];
  for (const b of o.benches) {
    out.push(`### ${b.name}: ${b.title}`, '');
    if (b.status !== 'ok') {
      out.push(`Failed after ${b.seconds.toFixed(0)} s: \`${(b.error ?? '').split('\n').filter(Boolean).pop() ?? 'unknown error'}\``, '');
      continue;
    }
    const busy = b.busyBefore !== undefined ? `; other processes busy ${fmtBusy(b.busyBefore)} CPUs before, ${fmtBusy(b.busyAfter)} after` : '';
    out.push(`${b.seconds.toFixed(0)} s; 1-minute load average ${b.loadBefore[0]!.toFixed(2)} before, ${b.loadAfter[0]!.toFixed(2)} after${busy}.${b.loaded ? ' **LOADED: disturbed by other processes.**' : ''}`, '');
    for (const t of b.tables ?? []) out.push(`${t.title}: ${t.about}.`, '', tableMd(t), '');
  }
  return out.join('\n');
}
