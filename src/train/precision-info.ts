// The startup line of a mixed-precision run: the CPU's 16-bit support (as /proc/cpuinfo
// and oneDNN see it) and which GEMM path the precision will take.
import { readFileSync } from 'node:fs';
import { dnnlStatus, dnnlMatmul } from '../backend/dnnl.js';
import type { Precision } from '../backend/precision.js';
import { measureGemmCeiling } from './gemm-ceiling.js';

/** The CPU's 16-bit-relevant ISA flags (avx512_bf16, amx_bf16, avx512_fp16, ...) from /proc/cpuinfo. */
export function cpuLowpFlags(): string[] {
  let txt = '';
  try { txt = readFileSync('/proc/cpuinfo', 'utf8'); } catch { return []; }
  const have = new Set((/^flags\s*:\s*(.+)$/m.exec(txt)?.[1] ?? '').split(/\s+/));
  return ['avx2', 'fma', 'f16c', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16', 'amx_tile'].filter((f) => have.has(f));
}

export function precisionSummary(p: Precision): string {
  const st = dnnlStatus();
  const kind = p === 'bf16' ? 'bfloat16' : 'float16';
  const prim = st.available ? dnnlMatmul(kind, false, true, 256, 256, 256, 256, 256, 256, 1, 0) : null;
  const path = prim ? `oneDNN ${st.version} ${prim.impl}` : st.available
    ? `oneDNN ${st.version} has no ${p} matmul on this CPU (ISA ${st.isa}): ${p} operands widened to fp32 GEMMs (${p} numerics, fp32 speed or slower)`
    : `oneDNN unavailable (${st.note}): ${p} operands widened to fp32 GEMMs`;
  const flags = cpuLowpFlags();
  const hw = p === 'bf16'
    ? `bf16 hardware: AVX512_BF16 ${flags.includes('avx512_bf16') ? 'yes' : 'no'}, AMX ${flags.includes('amx_bf16') ? 'yes' : 'no'}`
    : `fp16 hardware: AVX512_FP16 ${flags.includes('avx512_fp16') ? 'yes' : 'no'}`;
  // Both ceilings (measured once per process, cached): MFU is reported against the one of
  // the precision in use, and the pair shows what the 16-bit path gains on this CPU.
  const g = (q: Precision) => (measureGemmCeiling(1024, 8, q) / 1e9).toFixed(1);
  return `precision ${p}: fp32 master weights and optimizer state, ${p} GEMM operands with fp32 accumulation, ${p === 'bf16' ? 'activations saved for backward in bf16' : 'GEMM and attention inputs saved for backward in fp16'}; ` +
    `CPU ${flags.join(' ') || 'flags unknown'} (${hw}); GEMM ${path}; GEMM ceiling fp32 ${g('fp32')} GFLOP/s, ${p} ${g(p)} GFLOP/s per rank (MFU is against ${p}'s)`;
}
