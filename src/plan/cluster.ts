// Cluster specifications: JSON files (clusters/*.json) where every figure carries the
// public source it was taken from ({ "value": 1.6e12, "source": "https://..." }), or
// "measured: ..." for this machine, or "assumption: ..." where no figure is published.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../backend/native.js';
import { checkOverhead, type OverheadSpec } from './overhead-terms.js';

export interface Figure { value: number; source: string }

export interface ClusterSpec {
  name: string;
  description: string;
  nodes: Figure;
  devicesPerNode: Figure;
  device: {
    name: string;
    memoryBytes: Figure;
    /** Peak dense FLOP/s per device by precision. */
    peakFlops: { fp32: Figure; bf16?: Figure };
    /** Achievable fraction of peak for large GEMMs (measured here; an assumption elsewhere). */
    gemmEfficiency: Figure;
    /** Achievable fraction of peak for attention kernels. */
    attentionEfficiency: Figure;
    memBandwidth: Figure;
    /** Fixed cost per op launch in seconds (kernel launch or foreign-call overhead). */
    opOverhead: Figure;
    /**
     * Measured GEMM rates by shape, [m, n, k, FLOP/s] (this machine); the planner interpolates.
     * `points`: C = A·Bᵀ (NT, a linear layer's forward); `nn` and `tn`: C = A·B and Aᵀ·B, its
     * backward's input and weight gradients (src/plan/compute-rates.ts), where measured.
     */
    gemmTable?: { source: string; points: [number, number, number, number][]; nn?: [number, number, number, number][]; tn?: [number, number, number, number][] };
    /** Measured attention share of the GEMM ceiling by shape and phase, [T, D, forward, backward] (this machine). */
    attentionTable?: { source: string; points: [number, number, number, number][] };
    /** The optimizer step (norm, AdamW, zeroing), bytes AdamW moves per second (compute-rates.ts); else memBandwidth. */
    optimizerRate?: Figure;
    /**
     * Athanor's mixed precision (a bf16 trace): attention efficiency and kernel-class rates
     * (bytes per second, forward + backward) of the ops' 16-bit paths, measured (this machine).
     */
    /**
     * Measured rates of single ops by name (this machine): forward bytes (as the trace counts
     * them) per second of the op's forward and of its backward rule; fp32 traces only.
     */
    opRates?: { source: string; rates: Record<string, { fwd: number; bwd: number }> };
    lowpKernels?: {
      source: string; attentionEfficiency: number; rates: Record<string, number>; attentionTable?: [number, number, number, number][];
      /** Forward and backward rates of the ops that have 16-bit paths (as opRates); an op absent here runs its fp32 kernel (opRates). */
      opRates?: Record<string, { fwd: number; bwd: number }>;
    };
    /** Measured rates of the element-wise kernel classes, bytes moved per second (this machine). */
    classBandwidth?: { source: string; rates: Record<string, number> };
    /** The framework's fixed costs per traced op and the co-running devices' slowdown (src/plan/overhead-terms.ts), measured. */
    overhead?: OverheadSpec;
  };
  network: {
    intra: { alpha: Figure; beta: Figure };
    inter: { alpha: Figure; beta: Figure };
  };
  /**
   * How activation memory is counted: 'live' (the peak of live buffers, as a caching GPU
   * allocator approaches) or 'athanor-pool' (what Athanor's exact-size buffer pool holds,
   * measured to match on this machine). Default 'live'.
   */
  allocator?: 'athanor-pool' | 'live';
  /**
   * Fraction of communication time that also occupies the device's compute, in [0, 1]:
   * 0 where a NIC or DMA engine moves the data while the device computes (GPUs); 1 where
   * a device is a CPU core and the communication thread's copies, reductions and socket
   * calls run on the same cores (this machine). Overlapped ("hidden") communication then
   * still costs that share of its time. Default 0.
   */
  commComputeShare?: Figure;
  /**
   * Where communication runs on the device's own cores (commComputeShare > 0): the CPU time
   * a collective takes from a rank, α per message step and β bytes per CPU-second (this
   * machine: measured with the real transport). Prices the device's busy time.
   */
  commCpu?: {
    alpha: Figure; beta: Figure;
    /** Measured [bytes, CPU seconds] of one 2-rank all-reduce at several sizes (the cost is not linear in between); 2-rank groups interpolate it. */
    allReduce2?: { source: string; points: [number, number][] };
    /** Tensor parallelism's synchronous path (tp-terms.ts): [bytes, seconds] wall and CPU per 2-rank all-reduce, and the ranks' skew as a share of compute. */
    tpSync?: { source: string; path: string; wall: [number, number][]; cpu: [number, number][]; skew: Figure };
    /** Expert parallelism's synchronous exchange (ep-terms.ts): [bytes per rank, seconds] wall and CPU per balanced 2-rank all-to-all-v, and the ranks' skew at it as a share of compute. */
    epSync?: { source: string; wall: [number, number][]; cpu: [number, number][]; skew: Figure };
  };
  hostMemoryBytesPerNode?: Figure;
  powerWattsPerNode?: Figure;
  /** Measured embedding-server rate (rows looked up per second per server core), where measured. */
  embeddingRowsPerSecPerCore?: Figure;
  /** CPU instances that host embedding servers (recommender clusters). */
  embeddingServer?: { instances: Figure; coresPerInstance: Figure; memoryBytesPerInstance: Figure };
}

export function clustersDir(): string {
  return join(projectRoot(), 'clusters');
}

export function listClusters(): string[] {
  const d = clustersDir();
  return existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, '')).sort() : [];
}

/** A cluster by name (clusters/NAME.json) or by file path. */
export function loadCluster(nameOrFile: string): ClusterSpec {
  const file = /[/\\]|\.json$/.test(nameOrFile) ? nameOrFile : join(clustersDir(), `${nameOrFile}.json`);
  if (!existsSync(file)) throw new Error(`--cluster ${nameOrFile}: no such cluster file ${file} (known: ${listClusters().join(', ')})`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  return validateCluster(json, file);
}

export function validateCluster(x: unknown, file: string): ClusterSpec {
  const obj = (v: unknown, path: string): Record<string, unknown> => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${file}: field '${path}' must be an object`);
    return v as Record<string, unknown>;
  };
  const fig = (v: unknown, path: string, opt = false, min = 0): void => {
    if (v === undefined && opt) return;
    const f = obj(v, path);
    if (typeof f.value !== 'number' || !Number.isFinite(f.value) || f.value < min) throw new Error(`${file}: field '${path}.value' must be a number >= ${min}, got ${JSON.stringify(f.value)}`);
    if (typeof f.source !== 'string' || f.source.trim().length < 8) throw new Error(`${file}: field '${path}.source' must cite where the figure comes from (a URL, "measured: ..." or "assumption: ..."), got ${JSON.stringify(f.source)}`);
  };
  const points4 = (v: unknown, path: string, what: string): void => {
    if (!Array.isArray(v) || !v.length || v.some((p) => !Array.isArray(p) || p.length !== 4 || p.some((q) => typeof q !== 'number' || !(q > 0)))) {
      throw new Error(`${file}: field '${path}' must be a non-empty list of ${what} with positive numbers`);
    }
  };
  const r = obj(x, '(top level)');
  if (typeof r.name !== 'string' || !r.name) throw new Error(`${file}: field 'name' must be a non-empty string`);
  if (typeof r.description !== 'string') throw new Error(`${file}: field 'description' must be a string`);
  fig(r.nodes, 'nodes', false, 1);
  fig(r.devicesPerNode, 'devicesPerNode', false, 1);
  const d = obj(r.device, 'device');
  if (typeof d.name !== 'string') throw new Error(`${file}: field 'device.name' must be a string`);
  fig(d.memoryBytes, 'device.memoryBytes', false, 1);
  const pf = obj(d.peakFlops, 'device.peakFlops');
  fig(pf.fp32, 'device.peakFlops.fp32', false, 1);
  fig(pf.bf16, 'device.peakFlops.bf16', true, 1);
  fig(d.gemmEfficiency, 'device.gemmEfficiency');
  fig(d.attentionEfficiency, 'device.attentionEfficiency');
  for (const k of ['gemmEfficiency', 'attentionEfficiency'] as const) {
    if ((d[k] as Figure).value > 1) throw new Error(`${file}: field 'device.${k}.value' must be a fraction in (0, 1], got ${(d[k] as Figure).value}`);
  }
  fig(d.memBandwidth, 'device.memBandwidth', false, 1);
  fig(d.opOverhead, 'device.opOverhead');
  checkOverhead(d.overhead, file);
  if (d.gemmTable !== undefined) {
    const g = obj(d.gemmTable, 'device.gemmTable');
    if (!Array.isArray(g.points) || !g.points.length || g.points.some((p) => !Array.isArray(p) || p.length !== 4 || p.some((v) => typeof v !== 'number' || !(v > 0)))) {
      throw new Error(`${file}: field 'device.gemmTable.points' must be a non-empty list of [m, n, k, flopsPerSec] with positive numbers`);
    }
    for (const k of ['nn', 'tn'] as const) if (g[k] !== undefined) points4(g[k], `device.gemmTable.${k}`, '[m, n, k, flopsPerSec]');
  }
  if (d.attentionTable !== undefined) points4(obj(d.attentionTable, 'device.attentionTable').points, 'device.attentionTable.points', '[T, D, forwardEfficiency, backwardEfficiency]');
  fig(d.optimizerRate, 'device.optimizerRate', true, 1);
  const opRatesCheck = (v: unknown, path: string): void => {
    for (const [k, rv] of Object.entries(obj(v, path))) {
      const r = obj(rv, `${path}.${k}`);
      for (const ph of ['fwd', 'bwd'] as const) if (typeof r[ph] !== 'number' || !((r[ph] as number) > 0)) throw new Error(`${file}: field '${path}.${k}.${ph}' must be a positive number of bytes per second, got ${JSON.stringify(r[ph])}`);
    }
  };
  if (d.opRates !== undefined) opRatesCheck(obj(d.opRates, 'device.opRates').rates, 'device.opRates.rates');
  if (d.lowpKernels !== undefined) {
    const lk = obj(d.lowpKernels, 'device.lowpKernels');
    if (typeof lk.attentionEfficiency !== 'number' || !(lk.attentionEfficiency > 0 && lk.attentionEfficiency <= 1)) throw new Error(`${file}: field 'device.lowpKernels.attentionEfficiency' must be a fraction in (0, 1], got ${JSON.stringify(lk.attentionEfficiency)}`);
    const rates = obj(lk.rates, 'device.lowpKernels.rates');
    for (const [k, v] of Object.entries(rates)) if (typeof v !== 'number' || !(v > 0)) throw new Error(`${file}: field 'device.lowpKernels.rates.${k}' must be a positive number of bytes per second, got ${JSON.stringify(v)}`);
    if (lk.attentionTable !== undefined) points4(lk.attentionTable, 'device.lowpKernels.attentionTable', '[T, D, forwardEfficiency, backwardEfficiency]');
    if (lk.opRates !== undefined) opRatesCheck(lk.opRates, 'device.lowpKernels.opRates');
  }
  const n = obj(r.network, 'network');
  for (const lvl of ['intra', 'inter'] as const) {
    const l = obj(n[lvl], `network.${lvl}`);
    fig(l.alpha, `network.${lvl}.alpha`);
    fig(l.beta, `network.${lvl}.beta`, false, 1);
  }
  if (r.allocator !== undefined && r.allocator !== 'athanor-pool' && r.allocator !== 'live') throw new Error(`${file}: field 'allocator' must be 'athanor-pool' or 'live', got ${JSON.stringify(r.allocator)}`);
  fig(r.commComputeShare, 'commComputeShare', true);
  if (r.commComputeShare !== undefined && (r.commComputeShare as Figure).value > 1) throw new Error(`${file}: field 'commComputeShare.value' must be a fraction in [0, 1], got ${(r.commComputeShare as Figure).value}`);
  if (r.commCpu !== undefined) {
    const cc = obj(r.commCpu, 'commCpu');
    fig(cc.alpha, 'commCpu.alpha');
    fig(cc.beta, 'commCpu.beta', false, 1);
    const points = (pts: unknown, field: string): void => {
      if (!Array.isArray(pts) || pts.length < 2 || pts.some((q) => !Array.isArray(q) || q.length !== 2 || q.some((v) => typeof v !== 'number' || !(v > 0)))) throw new Error(`${file}: field '${field}' must be a list of at least two [bytes, seconds] pairs of positive numbers`);
    };
    if (cc.allReduce2 !== undefined) points(obj(cc.allReduce2, 'commCpu.allReduce2').points, 'commCpu.allReduce2.points');
    // The measured synchronous paths: tensor parallelism's all-reduce and expert parallelism's exchange.
    for (const name of ['tpSync', 'epSync'] as const) {
      if (cc[name] === undefined) continue;
      const t = obj(cc[name], `commCpu.${name}`);
      for (const k of ['wall', 'cpu']) points(t[k], `commCpu.${name}.${k}`);
      fig(t.skew, `commCpu.${name}.skew`);
    }
  }
  fig(r.hostMemoryBytesPerNode, 'hostMemoryBytesPerNode', true);
  fig(r.powerWattsPerNode, 'powerWattsPerNode', true);
  fig(r.embeddingRowsPerSecPerCore, 'embeddingRowsPerSecPerCore', true);
  if (r.embeddingServer !== undefined) {
    const e = obj(r.embeddingServer, 'embeddingServer');
    fig(e.instances, 'embeddingServer.instances', false, 1);
    fig(e.coresPerInstance, 'embeddingServer.coresPerInstance', false, 1);
    fig(e.memoryBytesPerInstance, 'embeddingServer.memoryBytesPerInstance', false, 1);
  }
  const known = ['name', 'description', 'nodes', 'devicesPerNode', 'device', 'network', 'allocator', 'commComputeShare', 'commCpu', 'hostMemoryBytesPerNode', 'powerWattsPerNode', 'embeddingRowsPerSecPerCore', 'embeddingServer'];
  for (const k of Object.keys(r)) if (!known.includes(k)) throw new Error(`${file}: unknown field '${k}' (fields: ${known.join(', ')})`);
  return r as unknown as ClusterSpec;
}
