// Validation of `parallel.offload` / `parallel.offloadDir`, run once at start with the
// other config checks (config.ts). Checks the directory without creating it, so a
// `--dry-run` has no side effects: it (or its nearest existing ancestor) must be a
// writable directory.
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export interface OffloadSettings {
  offload: 'none' | 'disk';
  offloadDir: string;
  tp: number;
  pp: number;
  ep: number;
}

export function validateOffload(p: OffloadSettings): void {
  if (p.offload !== 'none' && p.offload !== 'disk') throw new Error(`parallel.offload must be none or disk, got '${p.offload}'`);
  if (p.offload === 'none') return;
  if (!p.offloadDir) throw new Error('parallel.offload=disk needs parallel.offloadDir=PATH (a writable directory for the per-rank offload files)');
  // The offloaded optimizer works on DataParallel's flat shards; tensor/pipeline/expert
  // parallel layouts keep their own parameter placement and are not wired to it yet.
  for (const k of ['tp', 'pp', 'ep'] as const) {
    if (p[k] > 1) throw new Error(`parallel.offload=disk with parallel.${k}=${p[k]}: disk offload supports data parallelism with ZeRO 0-3 only; use parallel.${k}=1 or parallel.offload=none`);
  }
  let dir = resolve(p.offloadDir);
  for (;;) {
    let st;
    try { st = statSync(dir); } catch { const up = dirname(dir); if (up === dir) break; dir = up; continue; }
    if (!st.isDirectory()) throw new Error(`parallel.offloadDir '${p.offloadDir}': ${dir} is not a directory`);
    try { accessSync(dir, constants.W_OK | constants.X_OK); } catch {
      throw new Error(`parallel.offloadDir '${p.offloadDir}': ${dir} is not writable`);
    }
    return;
  }
  throw new Error(`parallel.offloadDir '${p.offloadDir}': no existing parent directory`);
}
