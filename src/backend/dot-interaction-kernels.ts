// Kernel table of the DLRM dot interaction: float32 batches above nativeMinElements() go to
// native/dot-interaction.c, the rest (float64, tiny, no library) to the TypeScript reference.
import { nativeFor } from './dispatch.js';
import { nativeFamily } from './native.js';
import * as ref from './reference/dot-interaction.js';
import type { F } from './reference/nn.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
export interface NativeDot { fwd: Fn; bwd: Fn }

const bind = nativeFamily<NativeDot>({
  fwd: 'int athn_dot_interaction_fwd_f32(const float *x, const float *e, _Inout_ float *out, int64_t B, int64_t F, int64_t D)',
  bwd: 'int athn_dot_interaction_bwd_f32(const float *g, const float *x, const float *e, _Inout_ float *dx, _Inout_ float *de, int64_t B, int64_t F, int64_t D, int accX, int accE)',
});

function nat(a: F, n: number): NativeDot | null {
  if (!(a instanceof Float32Array) || !nativeFor('float32', n)) return null;
  return bind();
}

/** out (B, D + P) = [x, pairwise dots of (x, e[0..F))] per sample; x (B, D), e (F, B, D). */
export function dotInteractionFwd(x: F, e: F, out: F, B: number, nF: number, D: number): void {
  const k = nat(x, B * (nF + 1) * D);
  if (!k) { ref.dotInteractionFwd(x, e, out, B, nF, D); return; }
  if (k.fwd(x, e, out, B, nF, D) !== 0) throw new Error(`dotInteraction: the native kernel could not allocate its ${(nF + 1) * D}-float scratch`);
}

/** dx / de (either may be null) from g (B, D + P); acc = add into them, else overwrite. */
export function dotInteractionBwd(g: F, x: F, e: F, dx: F | null, de: F | null, B: number, nF: number, D: number, accX: boolean, accE: boolean): void {
  const k = nat(x, B * (nF + 1) * D);
  if (!k) { ref.dotInteractionBwd(g, x, e, dx, de, B, nF, D, accX, accE); return; }
  if (k.bwd(g, x, e, dx, de, B, nF, D, accX ? 1 : 0, accE ? 1 : 0) !== 0) throw new Error(`dotInteraction backward: the native kernel could not allocate its ${(nF + 1) * D}-float scratch`);
}

/** The bound native kernels, or null (tests compare them with the reference). */
export function nativeDotInteraction(): NativeDot | null {
  return bind();
}
