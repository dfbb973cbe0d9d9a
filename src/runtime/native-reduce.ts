// koffi bindings for native/comm.c: the collectives' reduction loops (float32, bfloat16)
// and the same-host single-copy read. Typed arrays cross zero-copy as
// pointers to their first element (subarray views included, SharedArrayBuffer-backed ones
// too, so this also works on the communication thread). null when the native library is
// missing or predates comm.c; reduce-kernels.ts then runs its TypeScript loops.
import { nativeFamily } from '../backend/native.js';

export const NATIVE_OP_SUM = 0;
export const NATIVE_OP_MAX = 1;

export interface NativeReduce {
  combineF32: (op: number, n: number, out: Float32Array, a: Float32Array, b: Float32Array, divisor: number) => void;
  combineBf16: (op: number, n: number, out: Uint16Array, a: Uint16Array, b: Uint16Array, divisor: number) => void;
  divF32: (n: number, x: Float32Array, divisor: number) => void;
  divBf16: (n: number, x: Uint16Array, divisor: number) => void;
  accBf16: (op: number, first: number, n: number, acc: Float32Array, h: Uint16Array) => void;
  roundBf16: (n: number, x: Float32Array, out: Uint16Array) => void;
  /** Address of a typed array's first element (as a JS number: < 2^53 on x86-64/arm64 Linux). */
  addr: (p: Uint8Array) => number | bigint;
  /** process_vm_readv loop: bytes read or -errno. */
  vmRead: (pid: number, local: Uint8Array, remote: number, n: number) => number | bigint;
}

const bind = nativeFamily<NativeReduce>({
  combineF32: 'void athn_comm_combine_f32(int, int64_t, float *, const float *, const float *, double)',
  combineBf16: 'void athn_comm_combine_bf16(int, int64_t, uint16_t *, const uint16_t *, const uint16_t *, double)',
  divF32: 'void athn_comm_div_f32(int64_t, float *, double)',
  divBf16: 'void athn_comm_div_bf16(int64_t, uint16_t *, double)',
  accBf16: 'void athn_comm_acc_bf16(int, int, int64_t, float *, const uint16_t *)',
  roundBf16: 'void athn_comm_round_bf16(int64_t, const float *, uint16_t *)',
  addr: 'uint64_t athn_comm_addr(const void *)',
  vmRead: 'int64_t athn_comm_vm_read(int, void *, uint64_t, int64_t)',
}, () => process.env.ATHANOR_DIST_NATIVE !== '0');

/** The bound kernels, or null (no library, forced reference, or an older build without them). */
export function nativeReduce(): NativeReduce | null {
  return bind();
}
