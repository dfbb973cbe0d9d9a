// Runs the PyTorch peer of the kernel benchmarks (bench/peers/torch-ops.py) and
// returns its JSON lines. The peer is optional: without python3 or torch the
// benchmarks still report the Athanor side, so a failed run is logged and yields
// no records rather than an error.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { PYTHON } from './machine-info.js';

/** One output line of torch-ops.py (the fields its docstring lists; which are present depends on the op). */
export interface TorchPeerRecord {
  op: string;
  variant?: string;
  shape?: Record<string, number>;
  median_s?: number;
  min_s?: number;
  gb_per_s?: number;
  us_per_op?: number;
}

export interface TorchPeerOptions {
  threads: number;
  reps: number;
  /** Seconds a timed rep must last at least (--min-rep-s). */
  minRep: number;
  log: (line: string) => void;
  /** Whole-run limit; the default suits a handful of ops. */
  timeoutMs?: number;
}

/** Times `ops` (torch-ops.py op specs) in one peer process; [] when the peer cannot run. */
export function runTorchPeer(ops: Record<string, unknown>[], o: TorchPeerOptions): TorchPeerRecord[] {
  const script = join(projectRoot(), 'bench', 'peers', 'torch-ops.py');
  const spec = JSON.stringify({ threads: o.threads, reps: o.reps, ops });
  const r = spawnSync(PYTHON, [script, '--threads', String(o.threads), '--min-rep-s', String(o.minRep), spec],
    { encoding: 'utf8', timeout: o.timeoutMs ?? 600_000 });
  if (r.status !== 0) {
    o.log(`torch peer unavailable (${r.error?.message ?? ((r.stderr || '').trim().split('\n').pop() || `exit ${r.status}`)}); ratios omitted`);
    return [];
  }
  const records: TorchPeerRecord[] = [];
  for (const line of r.stdout.split('\n')) {
    if (line.trim()) records.push(JSON.parse(line) as TorchPeerRecord);
  }
  return records;
}
