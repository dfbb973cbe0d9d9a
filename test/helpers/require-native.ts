// Tests that compare against something optional (the native kernel library, OpenBLAS,
// PyTorch, mpirun) skip without it on a developer's machine. In CI that must never
// pass silently: .ci/run sets ATHANOR_REQUIRE_NATIVE=1 (native library and OpenBLAS),
// ATHANOR_REQUIRE_TORCH=1 and ATHANOR_REQUIRE_MPI=1, and then a missing dependency
// registers a failing test instead of a skip.
import { test } from 'node:test';
import { backendNotices, forcedReference } from '../../src/backend/native.js';

export type Requirement = 'native' | 'torch' | 'mpi';
const ENV: Record<Requirement, string> = { native: 'ATHANOR_REQUIRE_NATIVE', torch: 'ATHANOR_REQUIRE_TORCH', mpi: 'ATHANOR_REQUIRE_MPI' };

export function required(kind: Requirement): boolean {
  // ATHANOR_BACKEND=reference deliberately runs without the native library.
  return process.env[ENV[kind]] === '1' && !(kind === 'native' && forcedReference());
}

const failed = new Set<string>();

/**
 * The `skip` option for tests that need `what`: false when available; otherwise a
 * reason to skip, and, when the requirement is set, one failing test naming it.
 */
export function skipUnless(available: boolean, what: string, kind: Requirement = 'native'): string | false {
  if (available) return false;
  const reason = `${what} is unavailable${kind === 'native' && backendNotices().length ? ` (${backendNotices().join('; ')})` : ''}`;
  if (required(kind) && !failed.has(what)) {
    failed.add(what);
    test(`${what} is required (${ENV[kind]}=1)`, () => { throw new Error(`${ENV[kind]}=1 but ${reason}`); });
  }
  return reason;
}

/** Returns `lib`; throws when it is null and the native library is required. */
export function requireNative<T>(lib: T | null, what: string): T | null {
  if (lib === null && required('native')) {
    throw new Error(`ATHANOR_REQUIRE_NATIVE=1 but the ${what} is unavailable: ${backendNotices().join('; ') || 'the native library lacks it (rebuild with `npm install`)'}`);
  }
  return lib;
}
