// The sweep benchmark's options (the full grid meets the minimums; --quick is small)
// and its table (medians over reps, speedup and AUC difference against k = 0 of the same cell).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSweepArgs, summarize, surface, type SweepCell } from '../bench/recsys-sweep-bench.js';

test('sweep bench: full defaults meet the workload minimums; --quick is small; bad options are refused', () => {
  const full = parseSweepArgs([]).o;
  assert.ok(full.rows >= 1_000_000 && full.vocab >= 1_000_000);
  assert.deepEqual(full.trainers, [2, 4]);
  assert.deepEqual(full.ks, [0, 1, 2, 4, 8]);
  assert.deepEqual(full.rtts, [0, 1, 5, 20]);
  const q = parseSweepArgs(['--quick', '--bw', '0,25', '--correction', 'both', '--out', 'x.json']);
  assert.ok(q.o.rows < 100_000);
  assert.deepEqual(q.o.bwMBs, [0, 25]);
  assert.deepEqual(q.o.corrections, [false, true]);
  assert.equal(q.out, 'x.json');
  assert.throws(() => parseSweepArgs(['--bogus', '1']), /unknown option --bogus/);
  assert.throws(() => parseSweepArgs(['--ks', '0,-1']), /bad list/);
  assert.throws(() => parseSweepArgs(['--correction', 'maybe']), /--correction must be/);
  assert.equal(full.rankLink, false);
  assert.equal(parseSweepArgs(['--rank-link', 'same']).o.rankLink, true);
  assert.throws(() => parseSweepArgs(['--rank-link', 'both']), /--rank-link must be off or same/);
  assert.equal(parseSweepArgs([]).o.rowsPath, 'auto');
  assert.equal(parseSweepArgs(['--rows-path', 'socket']).o.rowsPath, 'socket');
  assert.throws(() => parseSweepArgs(['--rows-path', 'tcp']), /--rows-path must be auto or socket/);
});

test('sweep bench: the table takes medians over reps and compares with k = 0 of the same cell', () => {
  const c = (rtt: number, k: number, sps: number, auc: number, rep: number): SweepCell => ({
    trainers: 2, bwMBs: 0, rttMs: rtt, k, correction: k > 0, rep, rankLink: false, samplesPerSec: sps, auc, logLoss: 0.5, steps: 10, seconds: 1, load: { before: [1], after: [1] },
    cpu: { trainerMsPerStep: sps / 10, serversMsPerStep: sps / 20, jobMsPerStep: sps / 5, jobSeconds: sps / 50 },
    waits: { lookupMsPerStep: sps / 100, allReduceMsPerStep: sps / 200 },
  });
  const lines = summarize([c(5, 0, 100, 0.70, 0), c(5, 4, 150, 0.699, 0), c(0, 0, 300, 0.71, 0), c(5, 0, 140, 0.70, 1), c(5, 4, 210, 0.701, 1), c(5, 0, 120, 0.70, 2), c(5, 4, 180, 0.70, 2)]);
  const row = lines.find((l) => l.startsWith('| 2 | uncapped | socket | 5 | 4 |'))!;
  assert.match(row, /\| 180 \(150–210, 3\) \| 1\.50 \| 0\.7000 \| 0\.00 \| 18\.0, 9\.0, 36\.0 \| 1\.8, 0\.9 \|$/);
  assert.match(lines.find((l) => l.startsWith('| 2 | uncapped | shm | 0 | 0 |'))!, /\| 300 \(300–300, 1\) \| 1\.00 \|/);
});

test('sweep bench: the surface has a row per RTT and a column per k, speed-ups over k = 0 of the same row', () => {
  const c = (rtt: number, k: number, sps: number, auc: number, rep: number, bw = 0): SweepCell => ({
    trainers: 2, bwMBs: bw, rttMs: rtt, k, correction: false, rep, rankLink: false, samplesPerSec: sps, auc, logLoss: 0.5, steps: 10, seconds: 1, load: { before: [1], after: [1] },
    cpu: { trainerMsPerStep: 1, serversMsPerStep: 1, jobMsPerStep: 1, jobSeconds: 1 }, waits: { lookupMsPerStep: 1, allReduceMsPerStep: 1 },
  });
  const lines = surface([c(0, 0, 300, 0.71, 0), c(0, 4, 330, 0.709, 0), c(5, 0, 100, 0.70, 0), c(5, 4, 150, 0.7003, 0), c(5, 0, 140, 0.70, 1), c(5, 4, 210, 0.7003, 1), c(5, 0, 50, 0.70, 0, 10)]);
  assert.ok(lines.includes('| RTT | k = 0 | k = 4 |'));
  assert.ok(lines.includes('| 0 ms | 300 | 1.10× (−0.10) |'), lines.join('\n'));
  assert.ok(lines.includes('| 5 ms | 120 | 1.50× (+0.03) |'), lines.join('\n'));
  // Rows through shared memory and over the socket are separate blocks, never compared.
  assert.ok(lines.some((l) => l.includes('rows through shared memory')) && lines.some((l) => l.includes('rows over TCP')));
  // The capped block is its own table: its k = 4 is missing, not compared with the uncapped k = 0.
  assert.ok(lines.some((l) => l.startsWith('2 trainers, 10 MB/s')));
  assert.ok(lines.includes('| 5 ms | 50 | – |'), lines.join('\n'));
});
