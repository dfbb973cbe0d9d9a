// `athanor k8s`: the written manifests validate against the Kubernetes API schemas
// (kubernetes-models), say what the job needs (replicas, indexed ranks, tokens, endpoints),
// and malformed requests get clear errors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { PodTemplateSpec } from 'kubernetes-models/v1/PodTemplateSpec';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Job } from 'kubernetes-models/batch/v1/Job';
import { k8sMain, k8sManifestsOf } from '../src/deploy/k8s-main.js';
import { parseServerArgs } from '../src/recsys/embedding-server-main.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = { apiVersion: string; kind: string; metadata: { name: string }; spec?: any; data?: any; stringData?: any };

/** Validates one object with the kubernetes-models class of its kind (throws on a schema violation). */
function validate(o: Obj): void {
  const C = ({ StatefulSet, Job, Service, Secret, ConfigMap, PersistentVolumeClaim } as Record<string, new (x: any) => { validate(): void }>)[o.kind];
  if (!C) throw new Error(`no schema class for kind ${o.kind}`);
  new C(o).validate();
}

async function writeAndRead(argv: string[]): Promise<Obj[]> {
  const dir = mkdtempSync(join(tmpdir(), 'k8s-'));
  try {
    assert.equal(await k8sMain([argv[0]!, '--out', dir, ...argv.slice(1)]), 0); // before any '--'
    return readdirSync(dir).sort().map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as Obj);
  } finally { rmSync(dir, { recursive: true, force: true }); }
}

test('k8s recsys: every manifest validates and describes the job', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'k8s-cfg-'));
  try {
    const cfg = join(dir, 'job.json');
    writeFileSync(cfg, JSON.stringify({ data: { train: 'd/train.tsv', test: 'd/test.tsv' }, servers: { numShards: 3 }, train: { trainers: 4, checkpointEvery: 100 } }));
    const objs = await writeAndRead(['recsys', cfg, '--image', 'registry.example/athanor:1', '--name', 'ctr', '--namespace', 'ml', '--storage', '50Gi']);
    for (const o of objs) validate(o);
    const by = (kind: string, name: string): Obj => objs.find((o) => o.kind === kind && o.metadata.name === name)!;
    const sts = by('StatefulSet', 'ctr-emb'), svc = by('Service', 'ctr-emb'), job = by('Job', 'ctr-trainer'), sec = by('Secret', 'ctr-tokens');
    assert.equal(sts.spec.replicas, 3);
    assert.equal(sts.spec.serviceName, 'ctr-emb');
    assert.equal(svc.spec.clusterIP, 'None');
    assert.deepEqual(svc.spec.selector, sts.spec.template.metadata.labels);
    const server = sts.spec.template.spec.containers[0];
    assert.ok(server.args.includes('--load-latest'), 'a replaced server pod restores the newest checkpoint');
    assert.equal(server.args[server.args.indexOf('--num-shards') + 1], '3');
    assert.equal(job.spec.completionMode, 'Indexed');
    assert.equal(job.spec.completions, 4);
    assert.equal(job.spec.template.spec.subdomain, 'ctr-trainer');
    const env = Object.fromEntries(job.spec.template.spec.containers[0].env.map((e: any) => [e.name, e]));
    assert.equal(env.ATHANOR_WORLD_SIZE.value, '4');
    assert.match(env.ATHANOR_RANK.valueFrom.fieldRef.fieldPath, /job-completion-index/);
    assert.equal(env.ATHANOR_STORE_TOKEN.valueFrom.secretKeyRef.name, 'ctr-tokens');
    const eps = JSON.parse(env.ATHANOR_RECSYS_ENDPOINTS.value) as Array<{ host: string; port: number }>;
    assert.deepEqual(eps.map((e) => e.host), [0, 1, 2].map((i) => `ctr-emb-${i}.ctr-emb.ml.svc`));
    assert.ok(/^[0-9a-f]{48}$/.test(sec.stringData['embedding-token']) && sec.stringData['embedding-token'] !== sec.stringData['store-token']);
    assert.deepEqual(by('PersistentVolumeClaim', 'ctr-data').spec.accessModes, ['ReadWriteMany']);
    const rc = JSON.parse(by('ConfigMap', 'ctr-config').data['recsys.json']);
    assert.equal(rc.data.train, '/athanor/data/train.tsv');
    assert.equal(rc.workDir, '/athanor/work');
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('k8s lm: an Indexed Job of launchers, or an MPIJob whose pod templates validate', async () => {
  const objs = await writeAndRead(['lm', '--image', 'img:1', '--nodes', '3', '--nproc-per-node', '2', '--', 'train', 'cfg.json']);
  for (const o of objs) validate(o);
  const job = objs.find((o) => o.kind === 'Job')!;
  assert.equal(job.spec.completions, 3);
  const args: string[] = job.spec.template.spec.containers[0].args;
  assert.deepEqual(args.slice(args.indexOf('--')), ['--', 'train', 'cfg.json']);
  assert.equal(args[args.indexOf('--nnodes') + 1], '3');
  assert.equal(args[args.indexOf('--node-rank') + 1], '$(NODE_RANK)');
  assert.equal(args[args.indexOf('--master-addr') + 1], 'athanor-0.athanor.default.svc');
  const mpi = (await writeAndRead(['lm', '--mpi', '--image', 'img:1', '--nodes', '3', '--nproc-per-node', '2', '--', 'train', 'cfg.json']))[0]!;
  assert.equal(mpi.kind, 'MPIJob');
  assert.equal(mpi.spec.mpiReplicaSpecs.Worker.replicas, 3);
  for (const r of ['Launcher', 'Worker']) new PodTemplateSpec(mpi.spec.mpiReplicaSpecs[r].template).validate();
  const l = mpi.spec.mpiReplicaSpecs.Launcher.template.spec.containers[0];
  assert.equal(l.args[l.args.indexOf('-np') + 1], '6');
});

test('k8s: the schema check is real (a broken manifest fails it)', () => {
  const { manifests } = k8sManifestsOf(['lm', '--image', 'img', '--nodes', '2', '--nproc-per-node', '1', '--', 'train', 'x.json']);
  const job = structuredClone(manifests.find((m) => m.object.kind === 'Job')!.object) as Obj;
  job.spec.completions = 'two';
  assert.throws(() => validate(job), /completions/);
  const svc = structuredClone(manifests.find((m) => m.object.kind === 'Service')!.object) as Obj;
  svc.spec.ports[0].port = 'main'; // the schema wants an integer (ranges are the API server's business)
  assert.throws(() => validate(svc), /port/);
});

test('k8s: malformed requests get clear errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'k8s-bad-'));
  try {
    const cfg = (o: object): string => { const p = join(dir, `c${Math.random()}.json`); writeFileSync(p, JSON.stringify(o)); return p; };
    const good = { data: { train: '/d/t.tsv', test: '/d/e.tsv' } };
    assert.throws(() => k8sManifestsOf(['recsys', cfg({ ...good, servers: { numShards: 0 } }), '--image', 'i']), /servers: field 'numShards' must be an integer >= 1/);
    assert.throws(() => k8sManifestsOf(['recsys', cfg({ ...good, servers: { numShards: 2.5 } }), '--image', 'i']), /numShards/);
    assert.throws(() => k8sManifestsOf(['recsys', cfg(good)]), /--image is required/);
    assert.throws(() => k8sManifestsOf(['recsys', cfg(good), '--image', 'i', '--storage', 'lots']), /--storage 'lots' is not a Kubernetes quantity/);
    assert.throws(() => k8sManifestsOf(['recsys', cfg(good), '--image', 'i', '--name', 'Bad_Name']), /--name 'Bad_Name' must be a DNS label/);
    assert.throws(() => k8sManifestsOf(['recsys', cfg({ data: { generate: { trainRows: 10 } } }), '--image', 'i']), /data\.generate is set/);
    assert.throws(() => k8sManifestsOf(['lm', '--image', 'i', '--nodes', '0', '--nproc-per-node', '1', '--', 'train']), /--nodes must be an integer >= 1/);
    assert.throws(() => k8sManifestsOf(['lm', '--image', 'i', '--nodes', '2', '--nproc-per-node', '1']), /no rank command after '--'/);
    assert.throws(() => k8sManifestsOf(['lm', '--image', 'i', '--nodes', '2', '--nproc-per-node', '1', '--bogus', '1', '--', 'x']), /unknown option --bogus/);
    assert.throws(() => k8sManifestsOf(['helm']), /expected 'recsys' or 'lm'/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('embedding server: --load-latest parses, and excludes --load', () => {
  const base = ['--shard', '0', '--num-shards', '1', '--token-env', 'T', '--config', 'c.json'];
  assert.equal(parseServerArgs([...base, '--load-latest', '/ck']).loadLatest, '/ck');
  assert.throws(() => parseServerArgs([...base, '--load-latest', '/ck', '--load', '/x']), /--load or --load-latest, not both/);
});
