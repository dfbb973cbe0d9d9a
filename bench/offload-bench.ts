// What parallel.offload=disk costs on a model that fits: gpt-small training tokens/s
// with the fp32 master weights and AdamW moments in memory and streamed from the
// per-rank offload file, interleaved in every rep of one invocation (so load drift
// hits both), medians of per-step tokens/s after warm-up. Cases: 1 rank × 2 threads,
// and (full mode) 2 ranks × 1 thread with ZeRO-1, where each rank streams its half.
// Records the machine (CPU, ISA flags) and the load average before and after.
//   node dist/bench/offload-bench.js [--quick] [--out FILE.json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir, freemem } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from '../src/backend/native.js';
import { athanor, median, syntheticData } from './gpt-train-bench.js';
import { machineInfo } from './machine-info.js';

interface Case { name: string; ranks: number; threads: number; extra: string[] }

export interface OffloadBenchRow { config: string; memory: number; disk: number; ratio: number; perRunMemory: number[]; perRunDisk: number[] }

export async function runOffloadBench(opts: { quick?: boolean; log?: (s: string) => void } = {}) {
  const log = opts.log ?? ((s: string) => console.log(s));
  const reps = opts.quick ? 2 : 3, steps = opts.quick ? 5 : 12, warmup = opts.quick ? 1 : 2;
  const cases: Case[] = [{ name: 'gpt-small, 1 rank × 2 threads', ranks: 1, threads: 2, extra: [] }];
  if (!opts.quick) cases.push({ name: 'gpt-small, 2 ranks × 1 thread, ZeRO-1', ranks: 2, threads: 1, extra: ['--parallel.zero=1'] });
  const data = mkdtempSync(join(tmpdir(), 'athanor-offload-bench-data-'));
  const offDir = mkdtempSync(join(tmpdir(), 'athanor-offload-bench-'));
  const machine = await machineInfo(projectRoot());
  const loadBefore = loadavg();
  log(`offload bench: ${machine.cpuModel} (${machine.isa.join(' ')}), ${machine.logicalCpus} CPUs, load ${loadBefore.map((x) => x.toFixed(2)).join(' ')}; ` +
    `${reps} interleaved reps × ${steps} steps (median of steps > ${warmup}); offload file under ${offDir} (free memory ${(freemem() / 2 ** 30).toFixed(1)} GiB: the file likely stays in page cache)`);
  try {
    syntheticData(data);
    const runs = cases.map(() => ({ memory: [] as number[], disk: [] as number[] }));
    for (let r = 0; r < reps; r++) {
      cases.forEach((c, i) => {
        // Alternate which side goes first, so neither always runs on a warmer machine.
        const order: ('memory' | 'disk')[] = r % 2 ? ['disk', 'memory'] : ['memory', 'disk'];
        for (const side of order) {
          const extra = side === 'disk' ? [...c.extra, '--parallel.offload=disk', `--parallel.offloadDir=${offDir}`] : c.extra;
          const { tps } = athanor(data, c.ranks, c.threads, steps, warmup, extra);
          runs[i]![side].push(tps);
          log(`  rep ${r + 1}: ${c.name}, ${side === 'disk' ? 'offload=disk' : 'in memory  '}: ${tps.toFixed(0)} tokens/s`);
        }
      });
    }
    const rows: OffloadBenchRow[] = cases.map((c, i) => {
      const m = median(runs[i]!.memory), d = median(runs[i]!.disk);
      return { config: c.name, memory: m, disk: d, ratio: d / m, perRunMemory: runs[i]!.memory, perRunDisk: runs[i]!.disk };
    });
    const loadAfter = loadavg();
    log('\n| case | in memory (tokens/s) | offload=disk (tokens/s) | disk / memory |\n|---|---|---|---|');
    for (const row of rows) log(`| ${row.config} | ${row.memory.toFixed(0)} | ${row.disk.toFixed(0)} | ${row.ratio.toFixed(3)} |`);
    log(`load average before ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after ${loadAfter.map((x) => x.toFixed(2)).join(' ')}`);
    return { machine, loadBefore, loadAfter, reps, steps, warmup, rows };
  } finally {
    rmSync(data, { recursive: true, force: true });
    rmSync(offDir, { recursive: true, force: true });
  }
}

const direct = process.argv[1]?.endsWith('offload-bench.js');
if (direct) {
  const args = process.argv.slice(2);
  const outAt = args.indexOf('--out');
  const res = await runOffloadBench({ quick: args.includes('--quick') });
  if (outAt >= 0 && args[outAt + 1]) writeFileSync(args[outAt + 1]!, JSON.stringify(res, null, 2));
}
