// Reused shared-memory buffers for the pipeline's point-to-point messages. The pipeline
// group's communicator runs on a communication thread, which uses a SharedArrayBuffer in
// place but stages any other buffer through a fresh one (comm-thread.ts). The engine used
// to copy every outgoing activation into a fresh array (then into a fresh shared one), and
// receive into a fresh array (through a fresh shared one): four allocations and two extra
// copies per message, garbage the step holds until V8 collects it. Here each message
// takes a shared buffer of its exact size from a free list and gives it back when the
// send completes, or, for a received activation, when the stage input made on it has been
// disposed by its backward (only once nothing else refers to its storage).
import type { Tensor } from '../../core/tensor.js';

type Kind = 'f32' | 'u16';

export class MessageBuffers {
  private readonly free = new Map<string, (Float32Array | Uint16Array)[]>();
  /** Bytes of every buffer this pool ever made (they are all reused, none dropped). */
  allocatedBytes = 0;

  take(n: number): Float32Array;
  take(n: number, kind: 'u16'): Uint16Array;
  take(n: number, kind: Kind = 'f32'): Float32Array | Uint16Array {
    const b = this.free.get(`${kind}:${n}`)?.pop();
    if (b) return b;
    const bytes = Math.max(8, n * (kind === 'f32' ? 4 : 2));
    this.allocatedBytes += bytes;
    const sab = new SharedArrayBuffer(bytes);
    return kind === 'f32' ? new Float32Array(sab, 0, n) : new Uint16Array(sab, 0, n);
  }

  give(b: Float32Array | Uint16Array): void {
    const k = `${b instanceof Float32Array ? 'f32' : 'u16'}:${b.length}`;
    let list = this.free.get(k);
    if (!list) this.free.set(k, (list = []));
    list.push(b);
  }

  /** Disposes a tensor made on `b` and takes `b` back if no other tensor still holds its storage. */
  disposeTensor(t: Tensor, b: Float32Array): void {
    t.dispose();
    if (t.box.data === null) this.give(b);
  }
}
