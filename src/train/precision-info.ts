// The startup line of a mixed-precision run: the CPU's 16-bit support (as /proc/cpuinfo
// and oneDNN see it) and which GEMM path the precision will take.
import { readFileSync } from 'node:fs';
import { dnnlStatus, dnnlMatmul } from '../backend/dnnl.js';
import type { Precision } from '../backend/precision.js';

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
  return `precision ${p}: fp32 master weights and optimizer state, ${p} GEMM operands with fp32 accumulation; CPU ${cpuLowpFlags().join(' ') || 'flags unknown'}; GEMM ${path}`;
}
