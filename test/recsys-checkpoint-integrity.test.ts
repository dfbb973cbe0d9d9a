// Embedding-server and hybrid checkpoints detect corruption: a flipped byte, a
// truncated file and a deleted file are each reported with the file and the first
// damaged rows or tensor, and a hybrid resume falls back to the previous intact step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, truncateSync, unlinkSync, rmSync, statSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseServerConfig } from '../src/recsys/embedding-config.js';
import { EmbeddingShard } from '../src/recsys/embedding-shard.js';
import { dumpShard, loadShard, manifestName, ROWS_PER_CRC } from '../src/recsys/embedding-checkpoint.js';
import { idsToPairs } from '../src/recsys/embedding-hash.js';
import { DLRM } from '../src/recsys/dlrm.js';
import { AdamW } from '../src/optim/index.js';
import {
  latestCheckpoint, writeDenseCheckpoint, readDenseCheckpoint, embDirOf, densePathOf, dumpIdOf, manifestPathOf, checkpointSteps,
} from '../src/recsys/hybrid-checkpoint.js';

const G = 2, DIM = 5, N = 3 * ROWS_PER_CRC + 100;
const cfg = parseServerConfig({ seed: 7, groups: [{ id: G, name: 'user', dim: DIM }], optimizer: { kind: 'adagrad', lr: 0.1, eps: 1e-10, initialAccumulator: 0 } }, 'test');

function trainedShard(salt: number): EmbeddingShard {
  const s = new EmbeddingShard(cfg, 0, 1);
  const ids = Array.from({ length: N }, (_, i) => i);
  s.push(G, idsToPairs(G, ids), N, Float32Array.from({ length: N * DIM }, (_, k) => Math.sin(k + salt)), true);
  return s;
}

function flip(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] ^= 0xff;
  b[at + 1] ^= 0x0f;
  writeFileSync(path, b);
}

test('embedding shard checkpoint: flipped, truncated and deleted files name the group, section and rows', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-crc-'));
  try {
    const m = await dumpShard(trainedShard(0), dir, 'd1');
    const bin = join(dir, m.binFile);
    const ok = readFileSync(bin);
    assert.equal(loadShard(new EmbeddingShard(cfg, 0, 1), dir).rowsLoaded, N);
    // Row 2 * ROWS_PER_CRC + 5 of the embeddings section.
    const row = 2 * ROWS_PER_CRC + 5;
    flip(bin, m.groups[0]!.offsets.rows + row * DIM * 4);
    assert.throws(() => loadShard(new EmbeddingShard(cfg, 0, 1), dir),
      new RegExp(`${m.binFile}: checksum mismatch in group ${G} 'user' embeddings rows \\[${2 * ROWS_PER_CRC}, ${3 * ROWS_PER_CRC}\\)`));
    writeFileSync(bin, ok);
    flip(bin, m.groups[0]!.offsets.state + 10 * DIM * 4);
    assert.throws(() => loadShard(new EmbeddingShard(cfg, 0, 1), dir), new RegExp(`group ${G} 'user' optimizer state rows \\[0, ${ROWS_PER_CRC}\\)`));
    writeFileSync(bin, ok);
    truncateSync(bin, m.groups[0]!.offsets.lastTouch + 8);
    assert.throws(() => loadShard(new EmbeddingShard(cfg, 0, 1), dir), /truncated or overwritten\); first damaged: group 2 'user' last touch rows \[0, 4096\)/);
    unlinkSync(bin);
    assert.throws(() => loadShard(new EmbeddingShard(cfg, 0, 1), dir), /cannot read embedding shard file \(ENOENT\)/);
    writeFileSync(bin, ok);
    assert.equal(loadShard(new EmbeddingShard(cfg, 0, 1), dir).rowsLoaded, N);
    unlinkSync(join(dir, manifestName(0, 1)));
    assert.throws(() => loadShard(new EmbeddingShard(cfg, 0, 1), dir), /no complete embedding checkpoint/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('embedding shard checkpoint without optimizer state (SGD: empty sections) verifies and loads', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'athanor-emb-sgd-'));
  try {
    const sgd = parseServerConfig({ seed: 7, groups: [{ id: G, name: 'user', dim: DIM }], optimizer: { kind: 'sgd', lr: 0.1 } }, 'test');
    const s = new EmbeddingShard(sgd, 0, 1);
    const ids = Array.from({ length: 5000 }, (_, i) => i);
    s.push(G, idsToPairs(G, ids), ids.length, Float32Array.from({ length: ids.length * DIM }, (_, k) => Math.cos(k)), true);
    const m = await dumpShard(s, dir, 'sgd');
    assert.ok(m.checksum!.ranges.some((r) => r.end === r.begin), 'the empty optimizer-state section is recorded');
    const back = new EmbeddingShard(sgd, 0, 1);
    assert.equal(loadShard(back, dir).rowsLoaded, ids.length);
    assert.deepEqual(back.lookup(G, idsToPairs(G, ids), ids.length, true), s.lookup(G, idsToPairs(G, ids), ids.length, true));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const MODEL = { numDense: 4, numSparse: 2, embDim: DIM, bottom: [8], top: [8], seed: 1 };

/** A hybrid checkpoint at `step`: the embedding dump, then the dense file and manifest. */
async function hybridAt(dir: string, step: number): Promise<{ model: DLRM }> {
  await dumpShard(trainedShard(step), embDirOf(dir, step), dumpIdOf(step));
  const model = new DLRM({ ...MODEL, seed: step });
  const opt = new AdamW(model.parameters(), { lr: 0.01 });
  writeDenseCheckpoint(dir, model, opt, { step, batchSize: 8, worldSize: 1, samplesPerRank: step * 8 });
  return { model };
}

test('hybrid checkpoint: every damaged file makes resume fall back to the previous intact step, loudly', async () => {
  const base = mkdtempSync(join(tmpdir(), 'athanor-hybrid-crc-'));
  try {
    const pristine = join(base, 'pristine');
    const { model: m10 } = await hybridAt(pristine, 10);
    await hybridAt(pristine, 20);
    assert.deepEqual(checkpointSteps(pristine), [10, 20]);
    assert.equal(latestCheckpoint(pristine, () => assert.fail('no warning expected'))!.step, 20);
    const binOf = (d: string, s: number): string => join(embDirOf(d, s), `embedding-shard-0-of-1.${dumpIdOf(s)}.bin`);
    const damage: [string, (d: string) => void, RegExp][] = [
      ['dense flipped', (d) => flip(densePathOf(d, 20), Math.floor(statSync(densePathOf(d, 20)).size * 0.75)), /dense-20\.safetensors: checksum mismatch in tensor '[\w.]+'/],
      ['dense truncated', (d) => truncateSync(densePathOf(d, 20), 100), /dense-20\.safetensors: 100 bytes, the manifest records \d+ \(truncated or overwritten\); first damaged: the header/],
      ['dense deleted', (d) => unlinkSync(densePathOf(d, 20)), /dense-20\.safetensors: file is missing/],
      ['embedding rows flipped', (d) => flip(binOf(d, 20), 8 * N + 64), /embedding-shard-0-of-1\.step20\.bin: checksum mismatch in group 2 'user' embeddings rows \[0, 4096\)/],
      ['embedding file truncated', (d) => truncateSync(binOf(d, 20), 1000), /step20\.bin: 1000 bytes, the manifest records/],
      ['embedding file deleted', (d) => unlinkSync(binOf(d, 20)), /step20\.bin: cannot read embedding shard file \(ENOENT\)/],
      ['embedding manifest flipped', (d) => flip(join(embDirOf(d, 20), manifestName(0, 1)), 40), /embedding-shard-0-of-1\.json: checksum mismatch \(embedding shard manifest corrupted\)/],
      ['embedding manifest deleted', (d) => unlinkSync(join(embDirOf(d, 20), manifestName(0, 1))), /embedding-shard-0-of-1\.json: embedding shard manifest is missing/],
      ['checkpoint manifest flipped', (d) => writeFileSync(manifestPathOf(d, 20), readFileSync(manifestPathOf(d, 20), 'utf8').slice(0, -5)), /checkpoint-20\.json: unreadable checkpoint manifest/],
    ];
    for (const [what, hurt, why] of damage) {
      const d = join(base, what.replace(/ /g, '-'));
      cpSync(pristine, d, { recursive: true });
      hurt(d);
      const warns: string[] = [];
      const info = latestCheckpoint(d, (w) => warns.push(w));
      assert.equal(info?.step, 10, what);
      assert.match(warns[0]!, /WARNING: checkpoint step 20 .* is damaged and will not be used/, what);
      assert.match(warns[0]!, why, what);
      assert.match(warns[1]!, /WARNING: falling back to the previous intact checkpoint, step 10 \(skipped damaged step 20\)/, what);
      // The fallback's state is the step-10 state.
      const model = new DLRM({ ...MODEL, seed: 99 });
      readDenseCheckpoint(info!.densePath, model, new AdamW(model.parameters(), { lr: 0.01 }));
      assert.deepEqual(model.parameters().map((p) => [...p.data]), m10.parameters().map((p) => [...p.data]));
      assert.equal(loadShard(new EmbeddingShard(cfg, 0, 1), info!.embDir, info!.dumpId).step, trainedShard(10).step);
    }
    const all = join(base, 'all');
    cpSync(pristine, all, { recursive: true });
    flip(densePathOf(all, 20), 300);
    flip(binOf(all, 10), 8 * N + 64);
    assert.throws(() => latestCheckpoint(all, () => undefined), /every checkpoint is damaged \(steps 20, 10\)/);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
