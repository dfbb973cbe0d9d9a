// The machine and software a benchmark run is reported with: CPU (with cgroup
// limits, which change what "N threads" means), memory, OS, Node, OpenBLAS,
// PyTorch and the commit. Every probe degrades to null or a reason instead of
// failing: a report with an unknown field beats no report.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, release, totalmem } from 'node:os';

/** The PyTorch peer's interpreter: Debian's python3-torch by default; ATHANOR_PYTHON names another (e.g. a machine whose PyTorch lives in a venv). */
export const PYTHON = process.env.ATHANOR_PYTHON ?? '/usr/bin/python3';
const PY = PYTHON;

export interface MachineInfo {
  cpuModel: string;
  /** The instruction-set flags kernels and peers depend on (avx2, fma, avx512f, avx512_bf16, ...). */
  isa: string[];
  logicalCpus: number;
  physicalCores: number | null;
  availableParallelism: number;
  cgroupCpuLimit: string | null;
  memoryGiB: number;
  kernel: string;
  node: string;
  openblas: string | null;
  torch: string | null;
  torchUnavailable: string | null;
  python: string | null;
  nativeKernels: boolean | null;
  git: string | null;
}

function readText(p: string): string | null {
  try { return readFileSync(p, 'utf8'); } catch { return null; }
}

const ISA_FLAGS = ['sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'asimd', 'sve'];

function cpuInfo(): { model: string; physical: number | null; isa: string[] } {
  const txt = readText('/proc/cpuinfo');
  if (!txt) return { model: cpus()[0]?.model ?? 'unknown', physical: null, isa: [] };
  const flags = new Set((/^(?:flags|Features)\s*:\s*(.+)$/m.exec(txt)?.[1] ?? '').split(/\s+/));
  const isa = ISA_FLAGS.filter((f) => flags.has(f));
  const field = (k: string): string | undefined => new RegExp(`^${k}\\s*:\\s*(.+)$`, 'm').exec(txt)?.[1]?.trim();
  const name = field('model name') ?? field('Hardware') ?? field('cpu model') ?? cpus()[0]?.model ?? 'unknown';
  // Virtual machines often show a bare "AMD EPYC": family/model/stepping still identify the part.
  const ids = [['vendor_id', ''], ['cpu family', 'family '], ['model', 'model '], ['stepping', 'stepping ']]
    .map(([k, label]) => (field(k!) !== undefined ? `${label}${field(k!)}` : null)).filter(Boolean);
  const model = ids.length ? `${name} (${ids.join(', ')})` : name;
  const cores = new Set<string>();
  for (const block of txt.split(/\n\s*\n/)) {
    const phys = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1], core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
    if (phys !== undefined && core !== undefined) cores.add(`${phys}:${core}`);
  }
  return { model, physical: cores.size || null, isa };
}

function busyJiffies(): { busy: number; total: number } | null {
  const line = readText('/proc/stat')?.split('\n')[0];
  if (!line?.startsWith('cpu ')) return null;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal; guest time is already in user
  return { busy: total - idle, total };
}

/**
 * How many CPUs other processes keep busy right now: the busy fraction of all CPUs
 * over `ms`, times their count, sampled while this process waits. Unlike the load
 * average it is not polluted by the previous benchmark's own threads for a minute
 * afterwards. Null where /proc/stat is missing.
 */
export async function sampleBusyCpus(ms = 1000): Promise<number | null> {
  const a = busyJiffies();
  if (!a) return null;
  await new Promise((r) => setTimeout(r, ms));
  const b = busyJiffies()!;
  const dt = b.total - a.total;
  return dt > 0 ? +(((b.busy - a.busy) / dt) * cpus().length).toFixed(2) : null;
}

async function openblasVersion(): Promise<string | null> {
  try {
    const { openblas } = await import('../src/backend/native.js');
    const lib = openblas();
    if (lib) {
      const config = (lib.func('const char *openblas_get_config()') as () => string)();
      let core = '';
      try { core = (lib.func('const char *openblas_get_corename()') as () => string)(); } catch { /* older builds */ }
      return `${config.trim()}${core && !config.includes(core) ? ` (core ${core})` : ''}`;
    }
  } catch { /* fall through to the package manager */ }
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'libopenblas0-pthread'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? `OpenBLAS ${r.stdout.trim()} (dpkg; not loadable)` : null;
}

function torchInfo(): { torch: string | null; python: string | null; why: string | null } {
  if (!existsSync(PY)) return { torch: null, python: null, why: `${PY} not found` };
  const r = spawnSync(PY, ['-c', 'import sys; print(sys.version.split()[0]); import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 120_000 });
  const lines = (r.stdout ?? '').trim().split('\n');
  if (r.status !== 0) return { torch: null, python: lines[0] || null, why: (r.error?.message ?? (r.stderr || '').trim().split('\n').pop()) || `exit ${r.status}` };
  return { torch: lines[1] ?? null, python: lines[0] ?? null, why: null };
}

function gitInfo(root: string): string | null {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  if (head.status !== 0) return null;
  const st = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8' });
  return `${head.stdout.trim()}${st.status === 0 && st.stdout.trim() ? ' + uncommitted changes' : ''}`;
}

/** Describes this machine; `root` is the checkout whose commit is reported. */
export async function machineInfo(root: string): Promise<MachineInfo> {
  const cpu = cpuInfo();
  const quota = readText('/sys/fs/cgroup/cpu.max')?.trim() ?? null;
  let cgroupCpuLimit: string | null = null;
  if (quota && !quota.startsWith('max')) {
    const [q, p] = quota.split(/\s+/).map(Number);
    if (q && p) cgroupCpuLimit = `${(q / p).toFixed(2)} CPUs (cgroup cpu.max ${quota})`;
  }
  let nativeKernels: boolean | null = null;
  try { nativeKernels = (await import('../src/backend/native.js')).backendSummary().nativeKernels; } catch { /* reported as unknown */ }
  const t = torchInfo();
  return {
    cpuModel: cpu.model, isa: cpu.isa, logicalCpus: cpus().length, physicalCores: cpu.physical, availableParallelism: availableParallelism(), cgroupCpuLimit,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1), kernel: `${process.platform} ${release()} ${process.arch}`, node: process.version,
    openblas: await openblasVersion(), torch: t.torch, torchUnavailable: t.why, python: t.python, nativeKernels, git: gitInfo(root),
  };
}
