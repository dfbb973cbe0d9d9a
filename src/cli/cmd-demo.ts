// `athanor demo`: the main job on the bundled corpus. Prepares data/demo/corpus.txt
// (English fortunes + Chinese Tang poems) if needed, trains gpt-tiny for a few
// minutes on this machine, reports validation loss against the target, and samples.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from '../train/overrides.js';
import { projectRoot } from '../backend/native.js';
import { runPrepare } from './cmd-prepare.js';
import { configFromArgs } from './cmd-train.js';
import { train } from '../train/trainer.js';
import { asGpt } from '../train/parallel-layer.js';
import { generate } from '../nn/generate.js';
import { BpeTokenizer } from '../text/index.js';

/** Validation loss (nats/token, 2048-token BPE) the demo must reach; see README. */
export const DEMO_TARGET_LOSS = 4.8;

export const demoHelp = `athanor demo [--minutes M] [--out DIR] [--KEY=VALUE ...]
  Prepares the bundled English+Chinese corpus, trains gpt-tiny for its 700 steps
  (about 2-3 minutes on 2 cores; stopped after M minutes, default 5, on a slower machine),
  reports validation loss against the target ${DEMO_TARGET_LOSS}, and prints samples.
  Dotted overrides (e.g. --train.steps=400) apply to the gpt-tiny config.`;

export async function runDemo(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv);
  const minutes = Number(flags.minutes ?? 5);
  if (!(minutes > 0)) throw new Error(`demo: --minutes must be a positive number, got '${flags.minutes}'`);
  const out = flags.out ?? 'runs/demo';
  const dataDir = join(out, 'data');
  const corpus = join(projectRoot(), 'data', 'demo', 'corpus.txt');
  if (!existsSync(join(dataDir, 'train.idx'))) {
    if (!existsSync(corpus)) throw new Error(`demo: bundled corpus ${corpus} is missing`);
    await runPrepare([corpus, '--out', dataDir, '--vocab-size', '2048', '--val-fraction', '0.02']);
  }
  const trainFlags: Record<string, string> = { preset: 'gpt-tiny' };
  for (const [k, v] of Object.entries(flags)) if (k.includes('.')) trainFlags[k] = v;
  const cfg = configFromArgs(trainFlags);
  cfg.data.dir = dataDir;
  cfg.train.outDir = join(out, 'gpt-tiny');
  if (!flags['train.maxSeconds']) cfg.train.maxSeconds = Math.round(minutes * 60);
  const r = await train(cfg, { resume: false });
  const last = r.valLosses[r.valLosses.length - 1]!;
  const ok = last.loss <= DEMO_TARGET_LOSS;
  console.log(`\nvalidation loss ${r.valLosses[0]!.loss.toFixed(3)} at step ${r.valLosses[0]!.step} → ${last.loss.toFixed(3)} at step ${last.step}; ` +
    `target ${DEMO_TARGET_LOSS}: ${ok ? 'reached' : 'NOT reached'} (${Math.round(r.tokensPerSec)} tokens/s)`);
  const tok = BpeTokenizer.load(join(dataDir, 'tokenizer.json'));
  for (const prompt of ['The ', '床前明月光，']) {
    const ids = generate(asGpt(r.model), tok.encode(prompt), { maxNewTokens: 80, temperature: 0.8, topK: 40, seed: 1 });
    console.log(`\n--- sample (prompt ${JSON.stringify(prompt)}) ---\n${prompt}${tok.decode(ids)}`);
  }
  return ok ? 0 : 1;
}
