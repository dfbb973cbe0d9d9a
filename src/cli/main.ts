#!/usr/bin/env node
// The `athanor` command. Each subcommand lives in its own file and has --help.
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runPrepare, prepareHelp } from './cmd-prepare.js';
import { runTrain, trainHelp } from './cmd-train.js';
import { runGenerate, generateHelp } from './cmd-generate.js';
import { runEval, evalHelp } from './cmd-eval.js';
import { runDemo, demoHelp } from './cmd-demo.js';
import { runPlan, planHelp } from './cmd-plan.js';

interface Command {
  help: string;
  run: (argv: string[]) => Promise<number>;
}

const commands: Record<string, Command> = {
  prepare: { help: prepareHelp, run: runPrepare },
  train: { help: trainHelp, run: runTrain },
  generate: { help: generateHelp, run: runGenerate },
  eval: { help: evalHelp, run: runEval },
  demo: { help: demoHelp, run: runDemo },
  plan: { help: planHelp, run: runPlan },
  launch: {
    help: 'athanor launch --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P] -- <command ...>\n  Starts N ranks per node (like torchrun); see `athanor launch --help`.',
    run: async (argv) => (await import('../runtime/launcher.js')).launchMain(argv),
  },
  recsys: {
    help: 'athanor recsys <config.json> — PERSIA-style hybrid recommender training (embedding servers + dense trainers); see `athanor recsys --help`.',
    run: async (argv) => (await import('../recsys/recsys-main.js')).recsysMain(argv),
  },
  k8s: {
    help: 'athanor k8s recsys|lm ... — Kubernetes manifests for a recsys or LM job, validated against the API schemas; see `athanor k8s --help`.',
    run: async (argv) => (await import('../deploy/k8s-main.js')).k8sMain(argv),
  },
};

const usage = `athanor — train large neural networks across cores and machines

usage: athanor <command> [options]

commands:
${Object.entries(commands).map(([n, c]) => `  ${n.padEnd(9)} ${c.help.split('\n')[0]!.replace(/^athanor \S+ ?/, '')}`).join('\n')}

Run \`athanor <command> --help\` for a command's options.`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage);
    return name ? 0 : 1;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`athanor: unknown command '${name}'\n\n${usage}`);
    return 2;
  }
  if ((rest.includes('--help') || rest.includes('-h')) && name !== 'launch' && name !== 'recsys') {
    console.log(cmd.help);
    return 0;
  }
  return cmd.run(rest);
}

// Run when executed as a program: directly, or through the npm bin link (npx athanor).
const invokedDirectly = (() => {
  try {
    return Boolean(process.argv[1]) && realpathSync(process.argv[1]!) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
})();
// A failure must end the process even when it came after distributed start-up: the
// store server, mesh sockets and communication thread opened before the error would
// otherwise keep the event loop alive (every rank printed its error, then hung). So
// every non-zero outcome exits explicitly once the message is written (stderr to a
// pipe or file is synchronous on Linux and macOS); peers see the sockets close and
// fail in turn, and the launcher reports the first failed rank.
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      if (code !== 0) process.exit(code);
    },
    (err: unknown) => {
      console.error(`athanor: ${err instanceof Error ? err.message : String(err)}`);
      if (process.env.ATHANOR_DEBUG) console.error(err);
      process.exit(1);
    },
  );
}
