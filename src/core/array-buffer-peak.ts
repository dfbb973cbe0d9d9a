// The peak of the process's array-buffer bytes (process.memoryUsage().arrayBuffers:
// every ArrayBuffer and SharedArrayBuffer alive, tensors, flat parameter/gradient
// buffers, optimizer state and gather buffers alike). The figure only grows when
// something is allocated, so sampling right after each new allocation of the tensor pool,
// the ZeRO-3 gather allocator (which call `sampleArrayBuffers`) and at step ends catches
// the peak without a timer, which could not fire while the main thread computes.
import { pool } from './buffer-pool.js';

let peak = 0;

/** Reads the current array-buffer bytes and raises the peak; returns the reading. */
export function sampleArrayBuffers(): number {
  const b = process.memoryUsage().arrayBuffers;
  if (b > peak) peak = b;
  return b;
}

/** Samples after every new tensor-pool allocation from now on (about 25 µs each; the pool reuses buffers, so after the first step there are few). */
export function trackArrayBufferPeak(): void {
  pool.onGrow = sampleArrayBuffers;
}

/** Restarts the peak from the current reading (e.g. after set-up, to measure training only). */
export function resetArrayBufferPeak(): void {
  peak = 0;
  sampleArrayBuffers();
}

/** The highest reading so far (sampling once more now). */
export function arrayBufferPeak(): number {
  sampleArrayBuffers();
  return peak;
}
