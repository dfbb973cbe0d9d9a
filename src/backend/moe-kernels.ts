// Kernel table of the MoE combine op: float32 arrays above nativeMinElements() go to
// native/moe.c, the rest (float64, tiny, no library) to src/backend/reference/moe.ts.
import { nativeFor } from './dispatch.js';
import { nativeFamily } from './native.js';
import * as ref from './reference/moe.js';
import type { F } from './reference/nn.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
interface NativeMoe { combineFwd: Fn; combineBwd: Fn }

const bind = nativeFamily<NativeMoe>({
  combineFwd: 'void athn_moe_combine_fwd_f32(const float *y, const float *gate, const int32_t *slot, _Inout_ float *out, int64_t N, int64_t K, int64_t C)',
  combineBwd: 'void athn_moe_combine_bwd_f32(const float *dout, const float *y, const float *gate, const int32_t *slot, _Inout_ float *dy, _Inout_ float *dgate, int64_t N, int64_t K, int64_t C, int acc)',
});

function nat(a: F, n: number): NativeMoe | null {
  if (!(a instanceof Float32Array) || !nativeFor('float32', n)) return null;
  return bind();
}

export function moeCombineFwd(y: F, gate: F, slot: Int32Array, out: F, N: number, K: number, C: number): void {
  const k = nat(y, N * K * C);
  if (k) k.combineFwd(y, gate, slot, out, N, K, C);
  else ref.moeCombineFwd(y, gate, slot, out, N, K, C);
}

export function moeCombineBwd(dout: F, y: F, gate: F, slot: Int32Array, dy: F | null, dgate: F | null, N: number, K: number, C: number, acc: boolean): void {
  const k = nat(dout, N * K * C);
  if (k) k.combineBwd(dout, y, gate, slot, dy, dgate, N, K, C, acc ? 1 : 0);
  else ref.moeCombineBwd(dout, y, gate, slot, dy, dgate, N, K, C, acc);
}
