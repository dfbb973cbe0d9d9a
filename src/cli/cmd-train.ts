// `athanor train`: a preset config + dotted overrides, validated before anything runs.
import { readFileSync } from 'node:fs';
import { parseArgs, applyOverrides } from '../train/overrides.js';
import { presetConfig, validateTrainConfig, globalBatch, PRESETS, type TrainConfig } from '../train/config.js';
import { train } from '../train/trainer.js';
import { gptParamCount } from '../nn/gpt-config.js';
import { planMemory, fmtBytes } from '../train/memory-plan.js';
import { distributedLayerFromEnv } from '../train/dist-setup.js';

export const trainHelp = `athanor train [--preset NAME] [--config FILE.json] [--resume] [--dry-run] [--KEY=VALUE ...]
  Trains a GPT on data prepared by \`athanor prepare\`.

options:
  --preset NAME   one of: ${Object.keys(PRESETS).join(', ')} (default gpt-tiny)
  --config FILE   JSON with the same structure as a preset, merged over it
  --resume        continue from the latest checkpoint in train.outDir
  --dry-run       trace one step on the meta device; print parameters and memory per rank, allocate nothing
  --KEY=VALUE     dotted override of any config field, e.g. --model.nLayer=6 --train.steps=500
                  --data.dir=runs/data/demo --parallel.zero=2 --train.recompute=true

Run under \`athanor launch --nproc-per-node N -- train ...\` (or mpirun) for data parallelism.`;

export function configFromArgs(flags: Record<string, string>): TrainConfig {
  const cfg = presetConfig(flags.preset ?? 'gpt-tiny');
  if (flags.config) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(flags.config, 'utf8'));
    } catch (e) {
      throw new Error(`--config ${flags.config}: ${(e as Error).message}`);
    }
    applyOverrides(cfg, flatten(json), flags.config);
  }
  const overrides: Record<string, string> = {};
  for (const [k, v] of Object.entries(flags)) if (k.includes('.')) overrides[k] = v;
  applyOverrides(cfg, overrides, 'command line');
  return cfg;
}

function flatten(x: unknown, prefix = '', out: Record<string, string> = {}): Record<string, string> {
  if (x !== null && typeof x === 'object') {
    for (const [k, v] of Object.entries(x)) {
      if (prefix === '' && k === 'preset') continue;
      flatten(v, prefix ? `${prefix}.${k}` : k, out);
    }
  } else out[prefix] = String(x);
  return out;
}

export async function runTrain(argv: string[]): Promise<number> {
  const { flags, positional } = parseArgs(argv, ['resume', 'dry-run']);
  if (positional.length) throw new Error(`train: unexpected argument '${positional[0]}'\n\n${trainHelp}`);
  for (const k of Object.keys(flags)) {
    if (!k.includes('.') && !['preset', 'config', 'resume', 'dry-run'].includes(k)) throw new Error(`train: unknown option --${k}\n\n${trainHelp}`);
  }
  const cfg = configFromArgs(flags);
  if ('dry-run' in flags) {
    const world = cfg.parallel.dp * cfg.parallel.tp * cfg.parallel.pp;
    validateTrainConfig(cfg, world);
    const plan = planMemory(cfg);
    const n = plan.params;
    const closed = gptParamCount(cfg.model);
    console.log(`${cfg.preset}: ${n.toLocaleString('en-US')} parameters (closed form ${closed.toLocaleString('en-US')}${n === closed ? ', equal' : ', MISMATCH'})`);
    console.log(`world ${world} = dp ${cfg.parallel.dp} × tp ${cfg.parallel.tp} × pp ${cfg.parallel.pp}${cfg.parallel.ep > 1 ? ` (experts over ep ${cfg.parallel.ep})` : ""}, ZeRO-${cfg.parallel.zero}, global batch ${globalBatch(cfg)} × ${cfg.model.seqLen} tokens`);
    const b = plan.bytes;
    // The same breakdown the run's layout line reports as allocated (DataParallel.describe).
    console.log(`memory per rank: weights ${fmtBytes(b.weights)}, grads ${fmtBytes(b.grads)}, AdamW state ${fmtBytes(b.optimizer)}${b.gather ? `, gather buffers ${fmtBytes(b.gather)}` : ''}, activations ${fmtBytes(b.activations)}${b.other ? `, other ${fmtBytes(b.other)}` : ''} → total ${fmtBytes(b.total)}`);
    for (const note of plan.notes) console.log(`  ${note}`);
    console.log('  the run measures the same per rank: its layout line (allocated weights, grads, AdamW, gather buffers), "mem" on the progress line, peakArrayBuffersMB in metrics.jsonl\'s summary');
    return n === closed ? 0 : 1;
  }
  const parallel = await distributedLayerFromEnv(cfg);
  try {
    const r = await train(cfg, { resume: 'resume' in flags, parallel: parallel ?? undefined });
    if (!parallel || parallel.rank === 0) {
      const last = r.valLosses[r.valLosses.length - 1];
      console.log(`done: ${r.steps} steps, ${Math.round(r.tokensPerSec)} tokens/s${last ? `, validation loss ${last.loss.toFixed(4)}` : ''}`);
    }
  } finally {
    await parallel?.close();
  }
  return 0;
}
