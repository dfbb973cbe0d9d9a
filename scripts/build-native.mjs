// Compiles native/*.c into build/libathanor.so with the system C compiler.
// Never fails the install (unless ATHANOR_REQUIRE_NATIVE=1, as in CI): without a
// compiler Athanor runs on its TypeScript reference kernels and says so once at startup.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'build');
const out = join(outDir, 'libathanor.so');
const srcDir = join(root, 'native');
const sources = existsSync(srcDir) ? readdirSync(srcDir).filter((f) => f.endsWith('.c')).map((f) => join(srcDir, f)) : [];
if (sources.length === 0) { console.log('athanor: no native sources'); process.exit(process.env.ATHANOR_REQUIRE_NATIVE === '1' ? 1 : 0); }

const cc = process.env.CC || 'cc';
const cpuFlags = (() => {
  try { return readFileSync('/proc/cpuinfo', 'utf8'); } catch { return ''; }
})();
const hasAvx2 = / avx2 /.test(cpuFlags) && / fma /.test(cpuFlags);
// -march=native picks AVX2/FMA (or better) when present; portable builds set ATHANOR_PORTABLE=1.
const arch = process.env.ATHANOR_PORTABLE ? [] : ['-march=native'];
const base = ['-O3', '-std=c11', '-fPIC', '-shared', '-ffp-contract=fast', '-fno-math-errno', ...arch];
const attempts = [[...base, '-fopenmp'], base];
mkdirSync(outDir, { recursive: true });
let lastErr = '';
for (const flags of attempts) {
  try {
    const tmp = out + '.tmp';
    execFileSync(cc, [...flags, '-o', tmp, ...sources, '-lm', '-ldl', '-Wl,-z,nodelete'], { stdio: ['ignore', 'pipe', 'pipe'] });
    renameSync(tmp, out);
    console.log(`athanor: built ${out} (${cc} ${flags.join(' ')}; avx2+fma: ${hasAvx2})`);
    buildDnnl();
    process.exit(0);
  } catch (e) {
    lastErr = String(e.stderr || e.message);
  }
}
console.warn(`athanor: could not compile native kernels with ${cc}; the TypeScript reference kernels will be used (slow).\n${lastErr.slice(0, 2000)}`);
// CI sets ATHANOR_REQUIRE_NATIVE=1: there a failed compile fails the install instead of passing on the fallback.
if (process.env.ATHANOR_REQUIRE_NATIVE === '1') process.exit(1);

process.exit(0);

// oneDNN matmul shim (bf16/fp16 GEMMs with fp32 accumulation): a separate library so
// that the kernel library never depends on libdnnl; built only where dnnl.h exists
// (Debian: libdnnl-dev). Without it, bf16 falls back to fp32 GEMMs and says so once.
function buildDnnl() {
  const src = join(srcDir, 'dnnl', 'matmul-dnnl.c');
  const dnnlOut = join(outDir, 'libathanor_dnnl.so');
  if (!existsSync(src)) return;
  try {
    const tmp = dnnlOut + '.tmp';
    execFileSync(cc, ['-O2', '-std=c11', '-fPIC', '-shared', '-o', tmp, src, '-ldnnl'], { stdio: ['ignore', 'pipe', 'pipe'] });
    renameSync(tmp, dnnlOut);
    console.log(`athanor: built ${dnnlOut} (oneDNN matmul)`);
  } catch (e) {
    console.log(`athanor: oneDNN not found (apt-get install libdnnl-dev); bf16/fp16 GEMMs will use the fp32 fallback`);
  }
}
