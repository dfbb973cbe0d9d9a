// Checkpoints detect corruption: CRC-32C (native kernel against its TypeScript
// reference), then flipped bytes, truncated and deleted files in GPT training
// checkpoints and layout-independent multi-rank checkpoints; `--resume` falls back to
// the previous intact checkpoint, loudly, and resumes exactly as from that step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, truncateSync, unlinkSync, statSync, rmSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32c, crc32cCombine, verifyFile, ChecksumBuilder, ChecksumError } from '../src/io/checksum.js';
import { crc32cReference } from '../src/backend/reference/checksum.js';
import { nativeChecksum } from '../src/backend/native-checksum.js';
import {
  beginCheckpoint, writeRankShard, commitCheckpoint, CheckpointReader, verifyCheckpoint, findIntactCheckpoint, checkpointDirs,
} from '../src/io/checkpoint.js';
import { requireNative } from './helpers/require-native.js';
import { tinyData, tinyArgs, tmp, runCli, stepLosses } from './helpers/train-fixture.js';
import { train } from '../src/train/trainer.js';
import { configFromArgs } from '../src/cli/cmd-train.js';
import { parseArgs } from '../src/train/overrides.js';

function flip(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] ^= 0x5a;
  b[at + 1] ^= 0xa5;
  writeFileSync(path, b);
}

test('crc32c: the standard check value, native == reference on unaligned buffers, combine == one pass', () => {
  assert.equal(crc32cReference(0, Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  const k = requireNative(nativeChecksum(), 'crc32c kernel');
  const big = new Uint8Array(100_003);
  for (let i = 0; i < big.length; i++) big[i] = (Math.imul(i, 2654435761) >>> 13) & 255;
  for (const [lo, hi] of [[0, big.length], [1, 77_777], [3, 10], [5, 5], [7, 4_096 + 7]] as const) {
    const v = big.subarray(lo, hi);
    if (k) assert.equal(k.crc32c(0, v, v.length) >>> 0, crc32cReference(0, v), `native [${lo}, ${hi})`);
    assert.equal(crc32c(v), crc32cReference(0, v));
  }
  for (const cut of [0, 1, 333, 65_536, big.length]) {
    assert.equal(crc32cCombine(crc32c(big.subarray(0, cut)), crc32c(big.subarray(cut)), big.length - cut), crc32c(big), `cut ${cut}`);
    assert.equal(crc32c(big.subarray(cut), crc32c(big.subarray(0, cut))), crc32c(big), `continued at ${cut}`);
  }
  const sb = new ChecksumBuilder();
  sb.add('a', big.subarray(0, 10)); sb.add('a', big.subarray(10, 20)); sb.add('b', big.subarray(20));
  const fc = sb.finish();
  assert.equal(fc.crc32c, crc32c(big));
  assert.deepEqual(fc.ranges.map((r) => [r.name, r.begin, r.end]), [['a', 0, 20], ['b', 20, big.length]]);
  const dir = mkdtempSync(join(tmpdir(), 'athanor-crc-'));
  writeFileSync(join(dir, 'f'), big);
  verifyFile(join(dir, 'f'), fc);
  flip(join(dir, 'f'), 500);
  assert.throws(() => verifyFile(join(dir, 'f'), fc), (e: ChecksumError) => e.range === 'b' && /checksum mismatch in b/.test(e.message));
});

/** A two-rank, layout-independent checkpoint: rank r owns half of each tensor. */
function writeTwoRank(root: string, step: number): Map<string, Float32Array> {
  const full = new Map<string, Float32Array>();
  for (const [name, n] of [['w.a', 1000], ['w.b', 3000], ['w.c', 10]] as const) {
    full.set(name, Float32Array.from({ length: n }, (_, i) => Math.sin(i + step + name.length)));
  }
  beginCheckpoint(root, step);
  for (let r = 0; r < 2; r++) {
    writeRankShard(root, step, r, [...full].map(([name, d]) => {
      const h = Math.ceil(d.length / 2), start = r * h, end = Math.min(d.length, start + h);
      return { name, shape: [d.length], dtype: 'float32' as const, start, end, data: d.slice(start, end) };
    }));
  }
  commitCheckpoint(root, step, 2, { step });
  return full;
}

test('layout-independent checkpoint: flipped, truncated and deleted shard files are named with the first tensor range', () => {
  const root = mkdtempSync(join(tmpdir(), 'athanor-ckpt-'));
  const old = writeTwoRank(root, 1);
  const full = writeTwoRank(root, 2);
  const [newest, prev] = checkpointDirs(root);
  verifyCheckpoint(newest!);
  const r0 = new CheckpointReader(newest!);
  assert.deepEqual(r0.readFull('w.b'), full.get('w.b'));
  r0.close();

  // Flip two bytes in the middle of rank 1's file: they land inside one tensor's bytes.
  const f1 = join(newest!, 'rank-1.safetensors');
  const saved = readFileSync(f1);
  flip(f1, Math.floor(saved.length / 2));
  assert.throws(() => verifyCheckpoint(newest!), /rank-1\.safetensors: checksum mismatch in tensor 'w\.\w' elements \[\d+, \d+\)/);
  // Reading the damaged range fails too (not only a full verify); an untouched tensor still reads.
  const r = new CheckpointReader(newest!);
  assert.throws(() => { for (const n of ['w.a', 'w.b', 'w.c']) r.readFull(n); }, ChecksumError);
  r.close();
  const warns: string[] = [];
  assert.equal(findIntactCheckpoint(root, (m) => warns.push(m)), prev);
  assert.match(warns.join('\n'), /WARNING: checkpoint .*step-00000002 is damaged/);
  assert.match(warns.join('\n'), /WARNING: falling back to the previous intact checkpoint .*step-00000001/);
  const rp = new CheckpointReader(prev!);
  assert.deepEqual(rp.readFull('w.a'), old.get('w.a'));
  rp.close();

  // Truncated: the first tensor past the new end is named.
  writeFileSync(f1, saved);
  verifyCheckpoint(newest!);
  truncateSync(f1, statSync(f1).size - 100);
  assert.throws(() => verifyCheckpoint(newest!), /rank-1\.safetensors: \d+ bytes, the manifest records \d+ \(truncated or overwritten\); first damaged: tensor 'w\.\w' elements/);
  assert.throws(() => new CheckpointReader(newest!).readFull('w.b'), /truncated/);

  // Deleted.
  unlinkSync(f1);
  assert.throws(() => verifyCheckpoint(newest!), /rank-1\.safetensors: file is missing \(it held/);
  assert.throws(() => new CheckpointReader(newest!).readFull('w.a'), /rank-1\.safetensors: file is missing/);

  // Every checkpoint damaged: refuse rather than start from scratch silently.
  flip(join(prev!, 'rank-0.safetensors'), 200);
  assert.throws(() => findIntactCheckpoint(root, () => undefined), /every checkpoint is damaged/);
  rmSync(root, { recursive: true, force: true });
});

test('GPT training: --resume skips a corrupted newest checkpoint, says so, and continues exactly from the previous one', async () => {
  const data = await tinyData();
  const a = tmp('straight-ck'), b = tmp('corrupt-ck');
  const cfg = (out: string) => configFromArgs(parseArgs(tinyArgs(data, out)).flags);
  const straight = await train(await cfg(a), { quiet: true });
  await train(await cfg(b), { quiet: true });
  const root = join(b, 'checkpoints');
  const [step8, step4] = checkpointDirs(root);
  assert.match(step8!, /step-00000008$/);
  assert.match(step4!, /step-00000004$/);
  const shard = join(step8!, 'rank-0.safetensors');
  flip(shard, Math.floor(statSync(shard).size / 2));
  assert.throws(() => verifyCheckpoint(step8!), /rank-0\.safetensors: checksum mismatch in tensor '[\w.]+' elements \[0, \d+\)/);
  // Keep the metrics of steps 1..4 only, so the resumed run's losses are its own.
  const metrics = join(b, 'metrics.jsonl');
  writeFileSync(metrics, readFileSync(metrics, 'utf8').split('\n').filter((l) => { try { return JSON.parse(l).step <= 4; } catch { return false; } }).join('\n') + '\n');
  const r = await runCli(['train', ...tinyArgs(data, b), '--resume']);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /WARNING: checkpoint .*step-00000008 is damaged and will not be used: .*rank-0\.safetensors: checksum mismatch in tensor/);
  assert.match(r.out, /WARNING: falling back to the previous intact checkpoint .*step-00000004/);
  const losses = stepLosses(b);
  assert.deepEqual([5, 6, 7, 8].map((s) => losses.get(s)), straight.losses.slice(4));

  // A deleted shard and a truncated one are caught the same way.
  const c = tmp('deleted-ck');
  cpSync(a, c, { recursive: true });
  unlinkSync(join(c, 'checkpoints', 'step-00000008', 'rank-0.safetensors'));
  const warns: string[] = [];
  assert.match(findIntactCheckpoint(join(c, 'checkpoints'), (m) => warns.push(m))!, /step-00000004$/);
  assert.match(warns[0]!, /rank-0\.safetensors: file is missing/);
  const t = join(c, 'checkpoints', 'step-00000004', 'rank-0.safetensors');
  truncateSync(t, 1000);
  assert.throws(() => findIntactCheckpoint(join(c, 'checkpoints'), () => undefined), /every checkpoint is damaged/);
});
