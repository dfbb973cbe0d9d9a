// `athanor generate`: sample text from a trained checkpoint.
import { join } from 'node:path';
import { parseArgs } from '../train/overrides.js';
import { loadForInference } from '../train/train-checkpoint.js';
import { generate } from '../nn/generate.js';

export const generateHelp = `athanor generate --run DIR [--prompt TEXT] [options]
  Samples from the latest checkpoint of a training run (train.outDir).

options:
  --run DIR            training output directory (contains checkpoints/)
  --prompt TEXT        text to continue (default: the end-of-document token, i.e. a fresh document)
  --max-tokens N       tokens to generate (default 200)
  --temperature X      sampling temperature; 0 = greedy (default 0.8)
  --top-k K            sample among the K most likely tokens; 0 = all (default 40)
  --seed N             sampling seed (default 0)
  --tokenizer PATH     tokenizer.json (default: the one in the run's data.dir)`;

export async function runGenerate(argv: string[]): Promise<number> {
  const { flags, positional } = parseArgs(argv);
  const known = ['run', 'prompt', 'max-tokens', 'temperature', 'top-k', 'seed', 'tokenizer'];
  for (const k of Object.keys(flags)) if (!known.includes(k)) throw new Error(`generate: unknown option --${k}\n\n${generateHelp}`);
  if (positional.length) throw new Error(`generate: unexpected argument '${positional[0]}'`);
  if (!flags.run) throw new Error(`generate: --run DIR is required\n\n${generateHelp}`);
  const num = (k: string, d: number) => {
    if (flags[k] === undefined) return d;
    const v = Number(flags[k]);
    if (!Number.isFinite(v)) throw new Error(`generate: --${k} expects a number, got '${flags[k]}'`);
    return v;
  };
  const { model, tokenizer, checkpoint } = loadForInference(flags.run, flags.tokenizer);
  const prompt = flags.prompt !== undefined ? tokenizer.encode(flags.prompt) : [tokenizer.eosId];
  const ids = generate(model, prompt, {
    maxNewTokens: num('max-tokens', 200), temperature: num('temperature', 0.8), topK: num('top-k', 40), seed: num('seed', 0),
  });
  process.stderr.write(`(sampled from ${join(checkpoint)})\n`);
  console.log((flags.prompt ?? '') + tokenizer.decode(ids));
  return 0;
}
