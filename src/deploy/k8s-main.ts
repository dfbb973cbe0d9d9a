// `athanor k8s`: writes validated Kubernetes manifests (one JSON file per object, for
// `kubectl apply -f <dir>`) for a recsys job or an LM training job.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadRecsysConfig } from '../recsys/recsys-config.js';
import { lmManifests, recsysManifests, type Manifest } from './k8s-manifests.js';

export const K8S_HELP = `athanor k8s — Kubernetes manifests (validated against the Kubernetes API schemas)

  athanor k8s recsys <config.json> --image IMG [--name N] [--namespace NS] [--out DIR]
                     [--storage 20Gi] [--storage-class C] [--server-port 7070]
      Embedding servers: StatefulSet <N>-emb (servers.numShards replicas) + headless Service;
      each server loads the newest checkpoint at start, so a replaced pod resumes its rows.
      Trainers: Indexed Job <N>-trainer (train.trainers pods, one rank each) + headless Service.
      Tokens: Secret <N>-tokens. Configs: ConfigMap <N>-config. Volume: PVC <N>-data
      (ReadWriteMany) at /athanor: put the data files in /athanor/data/; checkpoints and
      result.json go to /athanor/work/.
  athanor k8s lm --image IMG --nodes M --nproc-per-node P [--mpi] [--name N] [--namespace NS]
                 [--out DIR] [--master-port 29500] -- <athanor command, e.g. train cfg.json>
      Indexed Job of M pods, each 'athanor launch --nnodes M --node-rank <index>' with pod 0
      as the rendezvous master (headless Service <N>), the store token in a Secret; with
      --mpi, a Kubeflow MPIJob (kubeflow.org/v2beta1) running mpirun over M workers.

  Defaults: --name athanor, --namespace default, --out k8s. The image must hold Athanor
  at /opt/athanor (dist/ and build/libathanor.so). Apply: kubectl apply -f <out>/`;

interface Parsed { positional: string[]; flags: Map<string, string>; bools: Set<string>; rest: string[] }

function parse(argv: string[], boolFlags: string[]): Parsed {
  const sep = argv.indexOf('--');
  const head = sep < 0 ? argv : argv.slice(0, sep);
  const p: Parsed = { positional: [], flags: new Map(), bools: new Set(), rest: sep < 0 ? [] : argv.slice(sep + 1) };
  for (let i = 0; i < head.length; i++) {
    const a = head[i]!;
    if (!a.startsWith('--')) { p.positional.push(a); continue; }
    const k = a.slice(2);
    if (boolFlags.includes(k)) { p.bools.add(k); continue; }
    const v = head[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`athanor k8s: --${k} needs a value`);
    p.flags.set(k, v);
    i++;
  }
  return p;
}

function only(p: Parsed, allowed: string[], what: string): void {
  for (const k of p.flags.keys()) if (!allowed.includes(k)) throw new Error(`athanor k8s ${what}: unknown option --${k}`);
}

function int(p: Parsed, k: string, def: number | undefined, what: string): number {
  const v = p.flags.get(k);
  if (v === undefined) {
    if (def === undefined) throw new Error(`athanor k8s ${what}: --${k} is required`);
    return def;
  }
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`athanor k8s ${what}: --${k} must be an integer >= 1 (got '${v}')`);
  return n;
}

/** Builds the manifests of a `athanor k8s` command line (no files written). */
export function k8sManifestsOf(argv: string[]): { out: string; manifests: Manifest[] } {
  const [kind, ...args] = argv;
  if (kind === 'recsys') {
    const p = parse(args, []);
    only(p, ['image', 'name', 'namespace', 'out', 'storage', 'storage-class', 'server-port'], 'recsys');
    if (p.positional.length !== 1) throw new Error('athanor k8s recsys: give exactly one config file (athanor k8s recsys <config.json> --image IMG)');
    const c = loadRecsysConfig(p.positional[0]!);
    return {
      out: p.flags.get('out') ?? 'k8s',
      manifests: recsysManifests(c, {
        image: p.flags.get('image') ?? '', name: p.flags.get('name') ?? 'athanor', namespace: p.flags.get('namespace') ?? 'default',
        storage: p.flags.get('storage') ?? '20Gi', serverPort: int(p, 'server-port', 7070, 'recsys'),
        ...(p.flags.has('storage-class') ? { storageClass: p.flags.get('storage-class')! } : {}),
      }),
    };
  }
  if (kind === 'lm') {
    const p = parse(args, ['mpi']);
    only(p, ['image', 'name', 'namespace', 'out', 'nodes', 'nproc-per-node', 'master-port'], 'lm');
    if (p.positional.length > 0) throw new Error(`athanor k8s lm: unexpected '${p.positional[0]}' (the rank command goes after '--')`);
    return {
      out: p.flags.get('out') ?? 'k8s',
      manifests: lmManifests({
        image: p.flags.get('image') ?? '', name: p.flags.get('name') ?? 'athanor', namespace: p.flags.get('namespace') ?? 'default',
        nodes: int(p, 'nodes', undefined, 'lm'), nprocPerNode: int(p, 'nproc-per-node', undefined, 'lm'),
        masterPort: int(p, 'master-port', 29500, 'lm'), command: p.rest, mpi: p.bools.has('mpi'),
      }),
    };
  }
  throw new Error(`athanor k8s: expected 'recsys' or 'lm' (got '${kind ?? ''}'); see athanor k8s --help`);
}

export async function k8sMain(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) { console.log(K8S_HELP); return argv.length === 0 ? 2 : 0; }
  const { out, manifests } = k8sManifestsOf(argv);
  mkdirSync(out, { recursive: true });
  manifests.forEach((m, i) => writeFileSync(join(out, `${String(i).padStart(2, '0')}-${m.file}`), `${JSON.stringify(m.object, null, 2)}\n`));
  console.log(`athanor k8s: wrote ${manifests.length} manifests to ${out}/ (${manifests.map((m) => `${m.object.kind}/${(m.object.metadata as { name: string }).name}`).join(', ')})`);
  console.log(`apply with: kubectl apply -f ${out}/`);
  return 0;
}
