// Spawns real rank processes of dist-worker.js against a store hosted by the test process.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TcpStoreServer } from '../../src/runtime/tcp-store.js';

export const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dist-worker.js');

export interface RankOutput { rank: number; code: number | null; signal: string | null; stdout: string; stderr: string; result: Record<string, unknown> | null }

export function parseResult(stdout: string): Record<string, unknown> | null {
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT ') || l.includes('] RESULT '));
  return line ? JSON.parse(line.slice(line.indexOf('RESULT ') + 7)) as Record<string, unknown> : null;
}

export async function runRanks(o: { world: number; env?: Record<string, string>; perRankEnv?: (r: number) => Record<string, string>; timeoutMs?: number; worker?: string }): Promise<RankOutput[]> {
  const token = randomBytes(16).toString('hex');
  const store = await TcpStoreServer.start({ host: '127.0.0.1', port: 0, token });
  try {
    return await Promise.all(Array.from({ length: o.world }, (_, rank) => new Promise<RankOutput>((resolve) => {
      const child = spawn(process.execPath, [o.worker ?? WORKER], {
        env: {
          ...process.env, ATHANOR_RANK: String(rank), ATHANOR_WORLD_SIZE: String(o.world), ATHANOR_LOCAL_RANK: String(rank),
          ATHANOR_MASTER_ADDR: '127.0.0.1', ATHANOR_MASTER_PORT: String(store.port), ATHANOR_STORE_TOKEN: token,
          ATHANOR_STORE_HOSTED: '1', ...o.env, ...o.perRankEnv?.(rank),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '', stderr = '';
      child.stdout.on('data', (c) => { stdout += c; });
      child.stderr.on('data', (c) => { stderr += c; });
      const t = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
      child.on('close', (code, signal) => { clearTimeout(t); resolve({ rank, code, signal, stdout, stderr, result: parseResult(stdout) }); });
    })));
  } finally {
    await store.close();
  }
}
