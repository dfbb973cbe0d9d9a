// Runs the benchmarks in sequence, each in its own child process (a crash or a leaked
// thread pool in one cannot disturb the next), streams their output, prints one table
// per benchmark, and writes runs/bench/<timestamp>.json (everything, machine-readable)
// and runs/bench/<timestamp>.md (a fragment to paste into BENCHMARKS.md).
// Nothing here asserts a timing: the exit status is non-zero only when a benchmark crashed.
//
//   node dist/bench/run-all.js [NAME ...] [--quick] [--skip NAME,...] [--out-dir DIR] [--list]
//                              [--max-load CPUS] [--allow-load]
//
// Load: before starting, and before and after each benchmark, it samples how many CPUs
// other processes keep busy (1 s of /proc/stat while it waits) next to the load average.
// A run whose first sample exceeds --max-load (default 0.5 CPUs) is refused unless
// --allow-load is given; any benchmark with a sample above it is marked LOADED in the
// JSON and the markdown, so disturbed numbers cannot pass for headline figures.
//
// Names (default: all, in the order of BENCHES below): gemm, ops-basic, ops-nn, optim, pool,
// tokenizer, data, allreduce, embedding-server, recsys-capacity, recsys-hybrid, gpt-train, moe;
// groups: ops (= ops-basic ops-nn), gpt (= gpt-train), embedding, recsys (both recsys ones).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { machineInfo, sampleBusyCpus } from './machine-info.js';
import { fmtLoad, machineMd, reportMd, tableMd, type BenchRecord, type LoadPolicy } from './report.js';
import { BENCHES, GROUPS } from './bench-registry.js';

const HERE = fileURLToPath(import.meta.url);
/** dist/bench/run-all.js -> the project root. */
const ROOT = resolve(HERE, '..', '..', '..');


function resolveNames(args: string[]): string[] {
  const out: string[] = [];
  for (const raw of args) {
    const a = raw.replace(/-bench$/, '');
    const names = GROUPS[a] ?? (BENCHES.some((b) => b.name === a) ? [a] : null);
    if (!names) throw new Error(`run-all: unknown benchmark '${raw}' (available: ${BENCHES.map((b) => b.name).join(', ')}; groups: ${Object.keys(GROUPS).join(', ')})`);
    for (const n of names) if (!out.includes(n)) out.push(n);
  }
  return out;
}

// ---------------------------------------------------------------- running

/** Runs one benchmark in a child; its TMPDIR is a fresh directory removed afterwards, so temporary files a benchmark leaves behind do not pile up. */
function runChild(name: string, quick: boolean, resultFile: string, tmp: string): Promise<{ code: number | null; tail: string }> {
  mkdirSync(tmp, { recursive: true });
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [HERE, '--child', name, '--result', resultFile, ...(quick ? ['--quick'] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env: { ...process.env, TMPDIR: tmp },
    });
    let tail = '';
    const keep = (s: string) => { tail = (tail + s).slice(-6000); };
    child.stdout.on('data', (d: Buffer) => { process.stdout.write(d); keep(d.toString()); });
    child.stderr.on('data', (d: Buffer) => { process.stderr.write(d); keep(d.toString()); });
    child.on('error', (e) => { keep(String(e)); });
    child.on('close', (code, signal) => {
      rmSync(tmp, { recursive: true, force: true });
      resolvePromise({ code: code ?? (signal ? 128 : null), tail: signal ? `${tail}\nkilled by ${signal}` : tail });
    });
  });
}

async function childMain(name: string, resultFile: string, quick: boolean): Promise<void> {
  const def = BENCHES.find((b) => b.name === name);
  if (!def) throw new Error(`run-all --child: unknown benchmark '${name}'`);
  const result = await def.run(quick, (s) => console.log(s));
  writeFileSync(resultFile, JSON.stringify(result ?? null));
}

const USAGE = `usage: node dist/bench/run-all.js [NAME ...] [--quick] [--skip NAME,...] [--out-dir DIR] [--list]
  NAME: ${BENCHES.map((b) => b.name).join(', ')}
  groups: ${Object.entries(GROUPS).filter(([k]) => k !== 'all').map(([k, v]) => `${k} (${v.join(' ')})`).join(', ')}, all (default)
  --quick   fewer sizes, reps and steps (a smoke test; numbers are indicative only)
  --max-load CPUS  most CPUs other processes may keep busy (sampled before and after each benchmark) [0.5]
  --allow-load     run even when the machine is busier than --max-load; such results are marked LOADED
  writes runs/bench/<timestamp>.json and runs/bench/<timestamp>.md (--out-dir to change)`;

async function main(argv: string[]): Promise<number> {
  const names: string[] = [];
  let quick = false, outDir = join(ROOT, 'runs', 'bench');
  const skip: string[] = [];
  const load: LoadPolicy = { maxBusyCpus: 0.5, allowed: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') quick = true;
    else if (a === '--allow-load') load.allowed = true;
    else if (a === '--max-load') {
      load.maxBusyCpus = Number(argv[++i]);
      if (!(load.maxBusyCpus >= 0)) { console.error(`run-all: --max-load needs a number of CPUs >= 0, got '${argv[i] ?? ''}'`); return 2; }
    }
    else if (a === '--out-dir') outDir = resolve(argv[++i] ?? '.');
    else if (a === '--skip') skip.push(...(argv[++i] ?? '').split(',').filter(Boolean));
    else if (a === '--list') { for (const b of BENCHES) console.log(`${b.name.padEnd(18)} ${b.title}`); return 0; }
    else if (a === '--help' || a === '-h') { console.log(USAGE); return 0; }
    else if (a.startsWith('-')) { console.error(`run-all: unknown option '${a}'\n${USAGE}`); return 2; }
    else names.push(a);
  }
  let selected: string[];
  try {
    const skipped = resolveNames(skip);
    selected = resolveNames(names.length ? names : ['all']).filter((n) => !skipped.includes(n));
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }

  const started = new Date();
  const stamp = started.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const loadBefore = loadavg();
  const busyAtStart = await sampleBusyCpus();
  if (busyAtStart !== null && busyAtStart > load.maxBusyCpus && !load.allowed) {
    console.error(`run-all: other processes keep ${busyAtStart} CPUs busy (load average ${fmtLoad(loadBefore)}), above --max-load ${load.maxBusyCpus}: `
      + 'timings would be disturbed. Wait for a quiet machine, or pass --allow-load to run anyway (results are then marked LOADED).');
    return 3;
  }
  const machine = await machineInfo(ROOT);
  console.log(`Athanor benchmarks${quick ? ' (--quick)' : ''}: ${selected.join(', ')}`);
  console.log(machineMd(machine, loadBefore, null));
  console.log(`- Other processes keep ${busyAtStart ?? 'an unknown number of'} CPUs busy (threshold ${load.maxBusyCpus}${load.allowed ? ', --allow-load' : ''})`);
  if (!machine.torch) console.log(`PyTorch is not available (${machine.torchUnavailable}): the peer columns stay empty; Athanor's side still runs.`);

  const tmp = mkdtempSync(join(tmpdir(), 'athanor-bench-'));
  const records: BenchRecord[] = [];
  try {
    for (const name of selected) {
      const def = BENCHES.find((b) => b.name === name)!;
      console.log(`\n=== ${name}: ${def.title}`);
      const busyBefore = await sampleBusyCpus();
      const rec: BenchRecord = { name, title: def.title, status: 'failed', seconds: 0, loadBefore: loadavg(), loadAfter: [], busyBefore };
      const file = join(tmp, `${name}.json`);
      const t0 = performance.now();
      const { code, tail } = await runChild(name, quick, file, join(tmp, name));
      rec.seconds = (performance.now() - t0) / 1000;
      rec.loadAfter = loadavg();
      rec.busyAfter = await sampleBusyCpus();
      rec.loaded = [busyBefore, rec.busyAfter].some((b) => b !== null && b !== undefined && b > load.maxBusyCpus);
      if (rec.loaded) console.log(`\n*** ${name}: LOADED: other processes kept ${busyBefore} CPUs busy before, ${rec.busyAfter} after (threshold ${load.maxBusyCpus}); not headline material`);
      if (code === 0 && existsSync(file)) {
        rec.result = JSON.parse(readFileSync(file, 'utf8'));
        try {
          rec.tables = def.tables(rec.result);
          rec.status = 'ok';
        } catch (e) {
          rec.error = `formatting the result failed: ${(e as Error).stack ?? e}`;
        }
      } else {
        rec.error = `exit ${code}: ${tail.trim().split('\n').slice(-15).join('\n')}`;
      }
      records.push(rec);
      if (rec.status === 'ok') {
        console.log(`\n--- ${name} (${rec.seconds.toFixed(0)} s)`);
        for (const t of rec.tables!) console.log(`${t.title}: ${t.about}.\n${tableMd(t)}`);
      } else {
        console.log(`\n--- ${name} FAILED after ${rec.seconds.toFixed(0)} s (${rec.error?.split('\n')[0]}); continuing`);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const loadAfter = loadavg();
  const { atomicWriteFileSync } = await import('../src/io/atomic-write.js');
  const summary = {
    version: 1, startedAt: started.toISOString(), finishedAt: new Date().toISOString(), quick, argv, selected,
    machine: { ...machine, loadBefore, loadAfter, busyAtStart }, load, loaded: records.some((r) => r.loaded), benches: records,
  };
  const jsonPath = join(outDir, `${stamp}.json`), mdPath = join(outDir, `${stamp}.md`);
  atomicWriteFileSync(jsonPath, JSON.stringify(summary, null, 2) + '\n');
  atomicWriteFileSync(mdPath, reportMd({ stamp, quick, argv, machine, loadBefore, loadAfter, benches: records, load }));
  const failed = records.filter((r) => r.status !== 'ok');
  console.log(`\n${records.length - failed.length}/${records.length} benchmarks ran${failed.length ? `; failed: ${failed.map((r) => r.name).join(', ')}` : ''}. Load average ${fmtLoad(loadBefore)} before, ${fmtLoad(loadAfter)} after.`);
  console.log(`wrote ${jsonPath}\nwrote ${mdPath}`);
  return failed.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const argv = process.argv.slice(2);
  const ci = argv.indexOf('--child');
  if (ci >= 0) {
    const ri = argv.indexOf('--result');
    childMain(argv[ci + 1] ?? '', argv[ri + 1] ?? '', argv.includes('--quick')).then(
      // Some benchmarks leave handles (servers, thread pools) that would keep the child alive.
      () => process.exit(0),
      (e: unknown) => { console.error(e); process.exit(1); },
    );
  } else {
    main(argv).then((code) => { process.exitCode = code; }, (e: unknown) => { console.error(e); process.exitCode = 1; });
  }
}
