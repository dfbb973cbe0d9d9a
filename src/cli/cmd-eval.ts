// `athanor eval`: validation loss (and perplexity) of a checkpoint.
import { join } from 'node:path';
import { parseArgs } from '../train/overrides.js';
import { loadForInference } from '../train/train-checkpoint.js';
import { evaluate } from '../train/trainer.js';
import { openIndexedDataset } from '../data/indexed-dataset-reader.js';

export const evalHelp = `athanor eval --run DIR [--data DIR] [--batches N]
  Reports the validation loss and perplexity of the latest checkpoint of a run.

options:
  --run DIR        training output directory (contains checkpoints/)
  --data DIR       prepared data directory (default: the run's data.dir); reads val.{bin,idx}
  --batches N      number of validation batches (default: the run's train.evalBatches)`;

export async function runEval(argv: string[]): Promise<number> {
  const { flags } = parseArgs(argv);
  for (const k of Object.keys(flags)) if (!['run', 'data', 'batches'].includes(k)) throw new Error(`eval: unknown option --${k}\n\n${evalHelp}`);
  if (!flags.run) throw new Error(`eval: --run DIR is required\n\n${evalHelp}`);
  const { model, config, checkpoint } = loadForInference(flags.run);
  const cfg = structuredClone(config);
  if (flags.batches) cfg.train.evalBatches = Number(flags.batches);
  const dir = flags.data ?? cfg.data.dir;
  const loss = evaluate(model, openIndexedDataset(join(dir, 'val')), cfg);
  console.log(JSON.stringify({ checkpoint, valLoss: loss, perplexity: Math.exp(loss) }));
  return 0;
}
