// Kubernetes manifests for Athanor jobs, built with kubernetes-models (typed objects that
// validate against the Kubernetes OpenAPI schemas) and validated before they are written.
//
// - recsys: embedding servers as a StatefulSet behind a headless Service (stable names
//   <name>-emb-<i>.<name>-emb, so a trainer's client reconnects to a replaced pod; the
//   server loads the newest checkpoint at start), dense trainers as an Indexed Job (one
//   rank per pod, rendezvous on pod 0 through a second headless Service), the shared
//   tokens as a Secret, configs as a ConfigMap, checkpoints on a ReadWriteMany PVC.
// - lm: an Indexed Job with one `athanor launch` per pod (nnodes = pods, node rank = the
//   completion index, master = pod 0), or the same ranks as a Kubeflow MPIJob.
import { randomBytes } from 'node:crypto';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { PodTemplateSpec } from 'kubernetes-models/v1/PodTemplateSpec';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Job } from 'kubernetes-models/batch/v1/Job';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IEnvVar } from 'kubernetes-models/v1/EnvVar';
import type { IPodTemplateSpec } from 'kubernetes-models/v1/PodTemplateSpec';
import type { RecsysConfig } from '../recsys/recsys-config.js';
import { serverConfigOf } from '../recsys/recsys-config.js';

export interface Manifest { file: string; object: Record<string, unknown> }

export interface CommonOptions {
  /** Container image with Athanor installed (node, dist/, build/libathanor.so). */
  image: string;
  /** Prefix of every object name (DNS-1035 label). */
  name: string;
  namespace: string;
  /** Where Athanor lives in the image (default /opt/athanor). */
  appDir?: string;
}

export interface RecsysK8sOptions extends CommonOptions {
  storage: string;
  storageClass?: string;
  /** Port the embedding servers listen on (default 7070). */
  serverPort?: number;
  /** Tokens (default: random); fixed only for reproducible tests. */
  tokens?: { embedding: string; store: string };
}

export interface LmK8sOptions extends CommonOptions {
  nodes: number;
  nprocPerNode: number;
  /** The rank command after `athanor` (e.g. ['train', 'cfg.json']). */
  command: string[];
  mpi?: boolean;
  masterPort?: number;
  slotsPerWorker?: number;
  tokens?: { store: string };
}

const NAME_RE = /^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$/;
const QUANTITY_RE = /^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/;

function checkCommon(o: CommonOptions, what: string): void {
  if (!o.image || typeof o.image !== 'string') throw new Error(`athanor k8s ${what}: --image is required (the container image with Athanor installed)`);
  if (!NAME_RE.test(o.name)) throw new Error(`athanor k8s ${what}: --name '${o.name}' must be a DNS label (lowercase letters, digits, '-', at most 42 characters, starting with a letter)`);
  if (!NAME_RE.test(o.namespace)) throw new Error(`athanor k8s ${what}: --namespace '${o.namespace}' must be a DNS label`);
}

/** Validates the object against its Kubernetes schema (throws naming the object and the field) and returns plain JSON. */
function checked(file: string, obj: { validate(): void; toJSON(): unknown }): Manifest {
  try { obj.validate(); } catch (e) { throw new Error(`athanor k8s: ${file} does not validate: ${(e as Error).message}`); }
  return { file, object: JSON.parse(JSON.stringify(obj)) as Record<string, unknown> };
}

const secretEnv = (name: string, secret: string, key: string): IEnvVar => ({ name, valueFrom: { secretKeyRef: { name: secret, key } } });
const fieldEnv = (name: string, path: string): IEnvVar => ({ name, valueFrom: { fieldRef: { fieldPath: path } } });
const COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']";

function headless(o: CommonOptions, name: string, selector: Record<string, string>, port: number): Manifest {
  return checked(`${name}-service.json`, new Service({
    metadata: { name, namespace: o.namespace, labels: { app: o.name } },
    spec: { clusterIP: 'None', selector, ports: [{ name: 'main', port, targetPort: port }], publishNotReadyAddresses: true },
  }));
}

// ------------------------------------------------------------------ recsys

export function recsysManifests(c: RecsysConfig, o: RecsysK8sOptions): Manifest[] {
  checkCommon(o, 'recsys');
  if (!QUANTITY_RE.test(o.storage)) throw new Error(`athanor k8s recsys: --storage '${o.storage}' is not a Kubernetes quantity (e.g. 20Gi)`);
  if (c.data.generate) throw new Error(`athanor k8s recsys: data.generate is set; the cluster job does not generate data: generate the files first (athanor recsys locally), copy them to the volume's data/ folder and remove data.generate`);
  if (c.servers.numShards < 1 || !Number.isInteger(c.servers.numShards)) throw new Error(`athanor k8s recsys: servers.numShards must be an integer >= 1 (got ${c.servers.numShards})`);
  if (c.train.trainers < 1 || !Number.isInteger(c.train.trainers)) throw new Error(`athanor k8s recsys: train.trainers must be an integer >= 1 (got ${c.train.trainers})`);
  const app = o.appDir ?? '/opt/athanor', port = o.serverPort ?? 7070, storePort = 29500;
  const emb = `${o.name}-emb`, tr = `${o.name}-trainer`, secret = `${o.name}-tokens`, cm = `${o.name}-config`, pvc = `${o.name}-data`;
  const mount = '/athanor';
  const base = (p: string): string => p.split('/').pop()!;
  // Paths inside the pods: work dir (checkpoints, result.json) and data on the shared volume.
  const clusterConfig = {
    workDir: `${mount}/work`,
    data: { ...c.data, train: `${mount}/data/${base(c.data.train)}`, test: `${mount}/data/${base(c.data.test)}`, generate: null },
    servers: { ...c.servers, host: '0.0.0.0' },
    model: c.model,
    train: { ...c.train, backend: 'tcp' },
  };
  const endpoints = Array.from({ length: c.servers.numShards }, (_, i) => ({ host: `${emb}-${i}.${emb}.${o.namespace}.svc`, port }));
  const tokens = o.tokens ?? { embedding: randomBytes(24).toString('hex'), store: randomBytes(24).toString('hex') };
  const volumes = [{ name: 'data', persistentVolumeClaim: { claimName: pvc } }, { name: 'config', configMap: { name: cm } }];
  const mounts = [{ name: 'data', mountPath: mount }, { name: 'config', mountPath: '/config', readOnly: true }];
  const node = (args: string[]): Pick<IContainer, 'command' | 'args'> => ({ command: ['node'], args });

  const out: Manifest[] = [];
  out.push(checked('secret.json', new Secret({
    metadata: { name: secret, namespace: o.namespace, labels: { app: o.name } },
    type: 'Opaque', stringData: { 'embedding-token': tokens.embedding, 'store-token': tokens.store },
  })));
  out.push(checked('configmap.json', new ConfigMap({
    metadata: { name: cm, namespace: o.namespace, labels: { app: o.name } },
    data: { 'recsys.json': JSON.stringify(clusterConfig, null, 1), 'embedding-config.json': JSON.stringify(serverConfigOf(c), null, 1) },
  })));
  out.push(checked('pvc.json', new PersistentVolumeClaim({
    metadata: { name: pvc, namespace: o.namespace, labels: { app: o.name } },
    spec: {
      accessModes: ['ReadWriteMany'], resources: { requests: { storage: o.storage } },
      ...(o.storageClass ? { storageClassName: o.storageClass } : {}),
    },
  })));
  out.push(headless(o, emb, { app: o.name, role: 'embedding-server' }, port));
  out.push(checked('embedding-servers.json', new StatefulSet({
    metadata: { name: emb, namespace: o.namespace, labels: { app: o.name } },
    spec: {
      serviceName: emb, replicas: c.servers.numShards, podManagementPolicy: 'Parallel',
      selector: { matchLabels: { app: o.name, role: 'embedding-server' } },
      template: {
        metadata: { labels: { app: o.name, role: 'embedding-server' } },
        spec: {
          containers: [{
            name: 'embedding-server', image: o.image, workingDir: app,
            ...node([`${app}/dist/src/recsys/embedding-server-main.js`, '--shard', '$(SHARD)', '--num-shards', String(c.servers.numShards),
              '--host', '0.0.0.0', '--port', String(port), '--token-env', 'ATHANOR_EMBEDDING_TOKEN', '--config', '/config/embedding-config.json',
              '--load-latest', `${mount}/work/checkpoints`]),
            env: [fieldEnv('SHARD', "metadata.labels['apps.kubernetes.io/pod-index']"), secretEnv('ATHANOR_EMBEDDING_TOKEN', secret, 'embedding-token')],
            ports: [{ name: 'main', containerPort: port }],
            readinessProbe: { tcpSocket: { port } },
            volumeMounts: mounts,
          }],
          volumes,
        },
      },
    },
  })));
  out.push(headless(o, tr, { app: o.name, role: 'trainer' }, storePort));
  out.push(checked('trainers.json', new Job({
    metadata: { name: tr, namespace: o.namespace, labels: { app: o.name } },
    spec: {
      completionMode: 'Indexed', completions: c.train.trainers, parallelism: c.train.trainers,
      // A failed trainer fails the job: ranks of a data-parallel group cannot rejoin one by one.
      backoffLimit: 0,
      template: {
        metadata: { labels: { app: o.name, role: 'trainer' } },
        spec: {
          subdomain: tr, restartPolicy: 'Never',
          containers: [{
            name: 'trainer', image: o.image, workingDir: app,
            ...node([`${app}/dist/src/cli/main.js`, 'recsys', '--worker', '/config/recsys.json']),
            env: [
              fieldEnv('ATHANOR_RANK', COMPLETION_INDEX),
              { name: 'ATHANOR_WORLD_SIZE', value: String(c.train.trainers) },
              { name: 'ATHANOR_LOCAL_RANK', value: '0' }, { name: 'ATHANOR_LOCAL_WORLD_SIZE', value: '1' },
              { name: 'ATHANOR_MASTER_ADDR', value: `${tr}-0.${tr}.${o.namespace}.svc` },
              { name: 'ATHANOR_MASTER_PORT', value: String(storePort) },
              secretEnv('ATHANOR_STORE_TOKEN', secret, 'store-token'),
              secretEnv('ATHANOR_EMBEDDING_TOKEN', secret, 'embedding-token'),
              { name: 'ATHANOR_RECSYS_ENDPOINTS', value: JSON.stringify(endpoints) },
            ],
            ports: [{ name: 'store', containerPort: storePort }],
            volumeMounts: mounts,
          }],
          volumes,
        },
      },
    },
  })));
  return out;
}

// ------------------------------------------------------------------ LM

export function lmManifests(o: LmK8sOptions): Manifest[] {
  checkCommon(o, 'lm');
  if (!Number.isInteger(o.nodes) || o.nodes < 1) throw new Error(`athanor k8s lm: --nodes must be an integer >= 1 (got ${o.nodes})`);
  if (!Number.isInteger(o.nprocPerNode) || o.nprocPerNode < 1) throw new Error(`athanor k8s lm: --nproc-per-node must be an integer >= 1 (got ${o.nprocPerNode})`);
  if (o.command.length === 0) throw new Error(`athanor k8s lm: no rank command after '--' (e.g. -- train config.json)`);
  const app = o.appDir ?? '/opt/athanor', port = o.masterPort ?? 29500;
  const job = o.name, secret = `${o.name}-tokens`;
  const token = o.tokens?.store ?? randomBytes(24).toString('hex');
  const out: Manifest[] = [];
  if (!o.mpi) {
    out.push(checked('secret.json', new Secret({
      metadata: { name: secret, namespace: o.namespace, labels: { app: o.name } }, type: 'Opaque', stringData: { 'store-token': token },
    })));
    out.push(headless(o, job, { app: o.name, role: 'node' }, port));
    out.push(checked('job.json', new Job({
      metadata: { name: job, namespace: o.namespace, labels: { app: o.name } },
      spec: {
        completionMode: 'Indexed', completions: o.nodes, parallelism: o.nodes, backoffLimit: 0,
        template: {
          metadata: { labels: { app: o.name, role: 'node' } },
          spec: {
            subdomain: job, restartPolicy: 'Never',
            containers: [{
              name: 'node', image: o.image, workingDir: app, command: ['node'],
              args: [`${app}/dist/src/cli/main.js`, 'launch', '--nproc-per-node', String(o.nprocPerNode), '--nnodes', String(o.nodes),
                '--node-rank', '$(NODE_RANK)', '--master-addr', `${job}-0.${job}.${o.namespace}.svc`, '--master-port', String(port), '--', ...o.command],
              env: [fieldEnv('NODE_RANK', COMPLETION_INDEX), secretEnv('ATHANOR_STORE_TOKEN', secret, 'store-token')],
              ports: [{ name: 'store', containerPort: port }],
            }],
          },
        },
      },
    })));
    return out;
  }
  // MPIJob (Kubeflow mpi-operator, kubeflow.org/v2beta1): mpirun on the launcher starts
  // nodes x nprocPerNode ranks over SSH; Athanor's MPI transport reads OMPI_COMM_WORLD_*.
  // The CRD's schema is not in kubernetes-models: the pod templates inside it are validated.
  const slots = o.slotsPerWorker ?? o.nprocPerNode;
  const np = o.nodes * o.nprocPerNode;
  const tpl = (file: string, t: IPodTemplateSpec): IPodTemplateSpec => checked(file, new PodTemplateSpec(t)).object as IPodTemplateSpec;
  const launcher = tpl('mpijob.json (Launcher template)', {
    metadata: { labels: { app: o.name, role: 'mpi-launcher' } },
    spec: {
      containers: [{
        name: 'launcher', image: o.image, workingDir: app, command: ['mpirun'],
        args: ['-np', String(np), '--bind-to', 'none', '-x', 'ATHANOR_BACKEND', 'node', `${app}/dist/src/cli/main.js`, ...o.command],
        env: [{ name: 'ATHANOR_BACKEND', value: 'mpi' }],
      }],
    },
  });
  const worker = tpl('mpijob.json (Worker template)', {
    metadata: { labels: { app: o.name, role: 'mpi-worker' } },
    spec: { containers: [{ name: 'worker', image: o.image, workingDir: app }] },
  });
  const mpiJob = {
    apiVersion: 'kubeflow.org/v2beta1', kind: 'MPIJob',
    metadata: { name: job, namespace: o.namespace, labels: { app: o.name } },
    spec: {
      slotsPerWorker: slots, runPolicy: { cleanPodPolicy: 'Running', backoffLimit: 0 }, sshAuthMountPath: '/root/.ssh', mpiImplementation: 'OpenMPI',
      mpiReplicaSpecs: {
        Launcher: { replicas: 1, restartPolicy: 'Never', template: launcher },
        Worker: { replicas: o.nodes, restartPolicy: 'Never', template: worker },
      },
    },
  };
  out.push({ file: 'mpijob.json', object: mpiJob });
  return out;
}
