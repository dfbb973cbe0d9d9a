// Kernel tests compare native kernels with their TypeScript references. Without the
// native library there is nothing to compare, which must never pass silently in CI:
// with ATHANOR_REQUIRE_NATIVE=1 (set by .ci/run) a missing library fails the test.
import { backendNotices, forcedReference } from '../../src/backend/native.js';

export function nativeRequired(): boolean {
  return process.env.ATHANOR_REQUIRE_NATIVE === '1' && !forcedReference();
}

/** Returns `lib`; throws when it is null and the native library is required. */
export function requireNative<T>(lib: T | null, what: string): T | null {
  if (lib === null && nativeRequired()) {
    throw new Error(`ATHANOR_REQUIRE_NATIVE=1 but the ${what} is unavailable: ${backendNotices().join('; ') || 'the native library lacks it (rebuild with `npm install`)'}`);
  }
  return lib;
}
