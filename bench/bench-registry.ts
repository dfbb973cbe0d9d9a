// The benchmarks run-all knows: each one's child-side run and the tables its result prints as
// (bench/run-all.ts runs them, one child process each). Groups name several at once.
import type { GemmBenchRow } from './gemm-bench.js';
import type { OpsBasicRow } from './ops-basic-bench.js';
import type { OpsNnRow } from './ops-nn-bench.js';
import type { OptimBenchRow } from './optim-bench.js';
import type { PoolBenchResult } from './pool-bench.js';
import type { TokenizerBenchResult } from './tokenizer-bench.js';
import type { DataBenchResult } from './data-bench.js';
import type { BenchResult as AllreduceResult } from './allreduce-bench.js';
import type { EmbeddingBenchResult } from './embedding-server-bench.js';
import type { CapacityResult } from './recsys-capacity.js';
import type { RecsysHybridBenchResult } from './recsys-hybrid-bench.js';
import type { ZeroMemoryRow } from './zero-memory-bench.js';
import type { AccuracyResult } from './accuracy-bench.js';
import type { GptTrainBenchRow } from './gpt-train-bench.js';
import type { MoeBenchResult } from './moe-bench.js';
import type { Row, Table } from './report.js';

export type Log = (line: string) => void;

export interface BenchDef {
  name: string;
  title: string;
  /** Runs inside the child process. */
  run(quick: boolean, log: Log): Promise<unknown>;
  /** Formats the result in the parent. */
  tables(result: any): Table[];
}

const ratioOf = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a !== null && a !== undefined && b !== null && b !== undefined && b > 0 && Number.isFinite(a) && Number.isFinite(b) ? a / b : null;
const sizeStr = (n: number): string => (n >= 1 << 20 && n % (1 << 20) === 0 ? `${n / (1 << 20)}M` : n >= 1024 && n % 1024 === 0 ? `${n / 1024}K` : String(n));
const bytesStr = (b: number): string => (b >= 1 << 20 ? `${b / (1 << 20)} MiB` : `${b / 1024} KiB`);
const bytesHuman = (b: number): string => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b.toFixed(0)} B`);

export const BENCHES: BenchDef[] = [
  {
    name: 'gemm',
    title: 'matmul through the Athanor op path vs a bare cblas_sgemm call (same OpenBLAS)',
    async run(quick, log) {
      const { runGemmBench } = await import('./gemm-bench.js');
      return runGemmBench(quick ? { sizes: [[256, 256, 256], [1024, 1024, 1024]], minRepSeconds: 0.01, log } : { log });
    },
    tables: (rows: GemmBenchRow[]) => [{
      title: 'GEMM', peer: 'cblas_sgemm', about: '2·M·N·K flops / median time; ratio = Athanor / direct (1 = no op-path overhead)',
      rows: rows.map((r) => ({
        case: `${r.m}×${r.k}×${r.n} ${r.form}, ${r.threads} thr`, unit: 'GFLOP/s', athanor: r.athanorGflops, peer: r.directGflops, ratio: r.ratio,
        notes: `best-rep ratio ${r.ratioMin.toFixed(3)}`,
      })),
    }],
  },
  {
    name: 'ops-basic',
    title: 'element-wise ops (add, gelu, bf16 cast) and per-op dispatch overhead vs PyTorch',
    async run(quick, log) {
      const { runOpsBasicBench } = await import('./ops-basic-bench.js');
      return runOpsBasicBench(quick ? { sizes: [1 << 20], minRepSeconds: 0.01, log } : { log });
    },
    tables: (rows: OpsBasicRow[]) => [{
      title: 'Element-wise ops', peer: 'PyTorch', about: 'GB/s from add 12·N, gelu 8·N, bf16 cast 6·N bytes; dispatch in µs per a + b on 16 floats (ratio = PyTorch µs / Athanor µs)',
      rows: rows.map((r) => r.op === 'dispatch'
        ? { case: `dispatch (a + b, 16 floats), ${r.threads} thr`, unit: 'µs/op', athanor: r.athanorUs, peer: r.torchUs, ratio: ratioOf(r.torchUs, r.athanorUs) }
        : { case: `${r.op} ${r.variant} N=${sizeStr(r.size)}, ${r.threads} thr`, unit: 'GB/s', athanor: r.athanorGBs, peer: r.torchGBs, ratio: r.ratio }),
    }],
  },
  {
    name: 'ops-nn',
    title: 'softmax, layerNorm (forward and backward), cross-entropy forward + backward vs PyTorch',
    async run(quick, log) {
      const { runOpsNnBench } = await import('./ops-nn-bench.js');
      return runOpsNnBench(quick ? { threads: [1], minRepSeconds: 0.01, log } : { log });
    },
    tables: (rows: OpsNnRow[]) => [{
      title: 'NN kernels', peer: 'PyTorch', about: 'GB/s from softmax/layernorm 8·R·C, their backwards and cross-entropy 12·R·C bytes',
      rows: rows.map((r) => ({
        case: `${r.op} ${Object.entries(r.shape).map(([k, v]) => `${k}=${v}`).join(' ')}, ${r.threads} thr`, unit: 'GB/s', athanor: r.athanorGBps, peer: r.torchGBps, ratio: r.ratio,
        notes: r.ratioMin === null ? '' : `best-rep ratio ${r.ratioMin.toFixed(2)}`,
      })),
    }],
  },
  {
    name: 'optim',
    title: 'AdamW step vs torch.optim.AdamW, and the global gradient norm',
    async run(quick, log) {
      const { runOptimBench } = await import('./optim-bench.js');
      return runOptimBench(quick ? { sizes: [1 << 20, 1 << 22], threads: [1], minRepSeconds: 0.01, log } : { log });
    },
    tables: (rows: OptimBenchRow[]) => [{
      title: 'Optimizer', peer: 'PyTorch', about: 'GB/s from AdamW 28·N bytes (best of torch single-tensor / foreach), grad norm 4·N bytes (no peer)',
      rows: rows.map((r) => ({ case: `${r.op} N=${sizeStr(r.n)}, ${r.threads} thr`, unit: 'GB/s', athanor: r.athanorGBps, peer: r.torchGBps, ratio: r.ratio })),
    }],
  },
  {
    name: 'pool',
    title: 'caching buffer pool on vs off, GPT training steps',
    async run(quick, log) {
      const { runPoolBench } = await import('./pool-bench.js');
      return runPoolBench({ quick, log });
    },
    tables: (r: PoolBenchResult) => {
      const presets = [...new Set(r.rows.map((x) => x.preset))];
      const rows: Row[] = [];
      for (const p of presets) {
        const on = r.rows.find((x) => x.preset === p && x.mode === 'on'), off = r.rows.find((x) => x.preset === p && x.mode === 'off');
        if (!on || !off) continue;
        const lower = (a: number | null, b: number | null) => ratioOf(b, a); // lower is better: peer / athanor
        const tag = `${p} B${on.B} T${on.T}, ${on.threads} thr`;
        rows.push({ case: `${tag}: time per step (median)`, unit: 'ms', athanor: on.msPerStep, peer: off.msPerStep, ratio: lower(on.msPerStep, off.msPerStep), notes: `min ${on.msPerStepMin.toFixed(1)} vs ${off.msPerStepMin.toFixed(1)} ms` });
        rows.push({ case: `${tag}: fresh allocations per step`, unit: 'bytes', athanor: bytesHuman(on.freshBytesPerStep), peer: bytesHuman(off.freshBytesPerStep), ratio: null, notes: `${on.freshAllocsPerStep.toFixed(1)} vs ${off.freshAllocsPerStep.toFixed(1)} buffers; ${on.missesPerStep.toFixed(1)} pool misses` });
        rows.push({ case: `${tag}: GC pause per step`, unit: 'ms', athanor: on.gcMsPerStep, peer: off.gcMsPerStep, ratio: lower(on.gcMsPerStep, off.gcMsPerStep), notes: on.gcPerStep === null ? '' : `${on.gcPerStep.toFixed(1)} vs ${off.gcPerStep!.toFixed(1)} GCs (major ${on.majorGcPerStep!.toFixed(1)} vs ${off.majorGcPerStep!.toFixed(1)})` });
        rows.push({ case: `${tag}: RSS at segment end (median)`, unit: 'MiB', athanor: on.rssMiB, peer: off.rssMiB, ratio: null, notes: `max ${on.rssMaxMiB.toFixed(0)} vs ${off.rssMaxMiB.toFixed(0)}` });
      }
      return [{ title: 'Buffer pool', peer: 'pool off', about: '"Athanor" = pool on; time ratio = off / on (> 1: the pool helps)', rows }];
    },
  },
  {
    name: 'tokenizer',
    title: 'byte-level BPE: training, encode, decode throughput',
    async run(quick, log) {
      const { runTokenizerBench } = await import('./tokenizer-bench.js');
      const r = await runTokenizerBench(quick ? { targetMB: 2, vocabSize: 2048 } : {});
      log(JSON.stringify(r, null, 2));
      return r;
    },
    tables: (r: TokenizerBenchResult) => [{
      title: 'Tokenizer', peer: '-', about: `${r.corpusMB} MB of ${r.source} text, ${r.documents} documents, vocabulary ${r.vocabSize}, ${r.bytesPerToken} bytes/token, round trip ${r.roundTripOk ? 'exact' : 'MISMATCH'}`,
      rows: [
        { case: `train (${r.merges} merges)`, unit: 's', athanor: r.trainSeconds, peer: null, ratio: null, notes: `${r.trainCpuSeconds} CPU-s` },
        { case: 'encode, per document', unit: 'MB/s', athanor: r.encodeMBps, peer: null, ratio: null, notes: `${r.encodeCpuMBps} MB per CPU-s` },
        { case: 'encode, one big string (cold cache)', unit: 'MB/s', athanor: r.encodeBigStringMBps, peer: null, ratio: null },
        { case: 'decode', unit: 'MB/s', athanor: r.decodeMBps, peer: null, ratio: null },
      ],
    }],
  },
  {
    name: 'data',
    title: '`prepare` throughput and TokenLoader batches/s',
    async run(quick, log) {
      const { runDataBench } = await import('./data-bench.js');
      return runDataBench({ corpusMB: quick ? 5 : 50, log });
    },
    tables: (r: DataBenchResult) => [{
      title: 'Data pipeline', peer: '-', about: `${(r.corpusBytes / 1e6).toFixed(1)} MB corpus, ${r.documents} documents, ${r.tokens} tokens (byte-level tokenizer)`,
      rows: [
        { case: 'prepare', unit: 'MB/s', athanor: r.prepareMBps, peer: null, ratio: null, notes: `${(r.corpusBytes / 1e6 / r.prepareCpuSeconds).toFixed(1)} MB per CPU-s` },
        ...r.loader.map((l) => ({ case: `loader B=${l.B} T=${l.T}`, unit: 'batches/s', athanor: l.batchesPerSec, peer: null, ratio: null, notes: `${(l.tokensPerSec / 1e6).toFixed(1)} M tokens/s` })),
      ],
    }],
  },
  {
    name: 'allreduce',
    title: 'allreduce bus bandwidth, 2 ranks, Athanor transports vs MPI_Allreduce from C',
    async run(quick, log) {
      const { runAllreduceBench } = await import('./allreduce-bench.js');
      return runAllreduceBench(quick ? { maxBytes: 4 << 20, log } : { log });
    },
    tables: (r: AllreduceResult) => {
      const rows: Row[] = [];
      for (const x of r.rows) {
        for (const t of r.columns.filter((c) => c !== 'mpi-c')) {
          const v = x.busbw[t];
          if (v === null || v === undefined) continue;
          rows.push({ case: `${t} ${bytesStr(x.bytes)}`, unit: 'GB/s busbw', athanor: v / 1e9, peer: x.busbw['mpi-c'] ? x.busbw['mpi-c']! / 1e9 : null, ratio: ratioOf(v, x.busbw['mpi-c']) });
        }
      }
      for (const [k, v] of Object.entries(r.p2p)) if (k !== 'mpi-c') rows.push({ case: `point-to-point one-way ${bytesStr(r.p2pBytes)}, ${k}`, unit: 'GB/s', athanor: v / 1e9, peer: r.p2p['mpi-c'] ? r.p2p['mpi-c'] / 1e9 : null, ratio: ratioOf(v, r.p2p['mpi-c']) });
      for (const [k, v] of Object.entries(r.p2pLatency)) if (k !== 'mpi-c') rows.push({ case: `point-to-point 4 KiB ping-pong, ${k}`, unit: 'us (half round trip)', athanor: v * 1e6, peer: r.p2pLatency['mpi-c'] ? r.p2pLatency['mpi-c'] * 1e6 : null, ratio: ratioOf(r.p2pLatency['mpi-c'], v) });
      return [{ title: 'Allreduce', peer: 'MPI_Allreduce (C)', about: `float32 sum, ${r.world} ranks, busbw = 2(n-1)/n · bytes / time${r.notes.length ? `; ${r.notes.join('; ')}` : ''}`, rows }];
    },
  },
  {
    name: 'embedding-server',
    title: 'embedding parameter server lookup + gradient push throughput per server core',
    async run(quick, log) {
      const { runEmbeddingServerBench } = await import('./embedding-server-bench.js');
      const r = await runEmbeddingServerBench(quick ? { dims: [16, 64], secondsPerDim: 1 } : {});
      log(`single-core memcpy ${r.memcpyGBps.toFixed(2)} GB/s; ${r.dims.map((d) => `dim ${d.dim} ${d.transport}: ${(d.rowsPerServerCoreSec / 1e6).toFixed(3)} M rows/server-core-s`).join(', ')}`);
      return r;
    },
    tables: (r: EmbeddingBenchResult) => [{
      title: 'Embedding server', peer: 'memcpy bound', about: `wire ${r.wireDtype}, ${r.optimizer}; bound = single-core memcpy ${r.memcpyGBps.toFixed(2)} GB/s ÷ bytes per row (ratio = fraction of the bound)`,
      rows: r.dims.map((d) => ({
        case: `dim ${d.dim}, ${d.transport}, ${d.idsPerBatch} ids/batch (${d.uniquePerBatch.toFixed(0)} unique)`, unit: 'M rows/server-core-s', athanor: d.rowsPerServerCoreSec / 1e6,
        peer: (r.memcpyGBps * 1e9) / d.bytesPerRow / 1e6, ratio: d.fractionOfBound, notes: `${(d.idsPerSec / 1e6).toFixed(3)} M ids/s wall, ${d.bytesPerRow} B/row`,
      })),
    }],
  },
  {
    name: 'recsys-capacity',
    title: 'embedding capacity: 10^12+ addressable parameters served under an LRU bound',
    async run(quick, log) {
      const { runRecsysCapacity } = await import('./recsys-capacity.js');
      const r = await runRecsysCapacity(quick ? { batches: 10 } : {});
      log(JSON.stringify(r));
      return r;
    },
    tables: (r: CapacityResult) => [{
      title: 'Recsys capacity', peer: '-', about: `${r.groups} groups × 2^${r.idBits} ids × ${r.dim} dims on 2 servers, LRU capacity ${r.capacityPerGroupPerServer} rows per group per server`,
      rows: [
        { case: 'addressable parameters', unit: 'count', athanor: r.addressableParams.toExponential(3), peer: null, ratio: null },
        { case: 'resident parameters (with optimizer state)', unit: 'count', athanor: r.residentParams.toExponential(3), peer: null, ratio: null, notes: `${r.residentRows} rows, ${(r.residentBytes / 2 ** 20).toFixed(0)} MiB` },
        { case: 'ids looked up and updated', unit: 'M ids/s', athanor: r.idsTouched / r.seconds / 1e6, peer: null, ratio: null, notes: `${r.idsTouched} ids, ${r.evictions} evictions` },
        { case: 'server RSS', unit: 'MiB', athanor: r.serverRssMiB.map((x) => x.toFixed(0)).join(', '), peer: null, ratio: null },
      ],
    }],
  },
  {
    name: 'recsys-hybrid',
    title: 'hybrid (staleness 4) vs synchronous recommender training, 2 servers + 2 trainers',
    async run(quick, log) {
      const { runRecsysHybridBench } = await import('./recsys-hybrid-bench.js');
      const r = await runRecsysHybridBench(quick ? { trainRows: 20_000, testRows: 5_000 } : {});
      log(JSON.stringify(r));
      return r;
    },
    tables: (r: RecsysHybridBenchResult) => [{
      title: 'Recsys hybrid training', peer: 'k = 0 (synchronous)', about: `${r.trainRows} training samples, ground-truth AUC ${r.groundTruthAUC.toFixed(4)}`,
      rows: r.runs.map((x) => {
        const sync = r.runs.find((y) => y.staleness === 0);
        return { case: `staleness k=${x.staleness}`, unit: 'samples/s', athanor: x.samplesPerSec, peer: sync?.samplesPerSec, ratio: ratioOf(x.samplesPerSec, sync?.samplesPerSec), notes: `AUC ${x.auc.toFixed(4)}, log-loss ${x.logLoss.toFixed(4)}, ${x.steps} steps` };
      }),
    }],
  },
  {
    name: 'gpt-train',
    title: 'gpt-small training throughput vs PyTorch',
    async run(quick, log) {
      const { runGptTrainBench } = await import('./gpt-train-bench.js');
      return runGptTrainBench(quick ? { reps: 1, steps: 3, warmup: 1, log } : { log });
    },
    tables: (rows: GptTrainBenchRow[]) => [{
      title: 'GPT training', peer: 'PyTorch, same processes × threads', about: 'gpt-small (21,130,240 parameters) global batch 8 × 256 tokens, AdamW + clip 1.0; median per-step tokens/s after warm-up over interleaved reps; 1 rank × 2 threads vs PyTorch 1 process × 2 threads, 2 ranks × 1 thread vs PyTorch DDP (gloo) 2 processes × 1 thread',
      rows: rows.filter((r) => !r.config.startsWith('pytorch')).map((r) => {
        const p = rows.find((x) => x.config === r.peer);
        return {
          case: r.config, unit: 'tokens/s', athanor: r.tokensPerSec, peer: p?.tokensPerSec, ratio: ratioOf(r.tokensPerSec, p?.tokensPerSec),
          notes: `${r.mfu !== undefined ? `MFU ${(100 * r.mfu).toFixed(0)}% of measured GEMM ceiling; ` : ''}runs ${r.perRun.map((x) => x.toFixed(0)).join(', ')}${p ? `; peer ${p.config}: ${p.perRun.map((x) => x.toFixed(0)).join(', ')}` : ''}`,
        };
      }),
    }],
  },
  {
    name: 'moe',
    title: 'mixture of experts: grouped expert GEMM, MoE vs dense tokens/s, all-to-all-v (flat, hierarchical, MPI_Alltoallv)',
    async run(quick, log) {
      const { runMoeBench } = await import('./moe-bench.js');
      return runMoeBench(quick, log);
    },
    tables: (r: MoeBenchResult) => {
      const dense = r.model.find((x) => x.model === 'gpt-tiny'), moe = r.model.find((x) => x.model === 'moe-tiny');
      return [
        {
          title: 'MoE grouped expert GEMM', peer: 'per-expert loop of linear layers', about: 'E experts over S routed rows C→F, forward + backward (3·2·S·C·F flops), uneven blocks as routing makes them; ratio = grouped / loop throughput',
          rows: r.grouped.map((x) => ({ case: `E=${x.E} S=${x.S} C=${x.C} F=${x.F}`, unit: 'GFLOP/s', athanor: x.groupedGflops, peer: x.loopGflops, ratio: ratioOf(x.groupedGflops, x.loopGflops), notes: `${x.groupedMs!.toFixed(1)} ms vs ${x.loopMs!.toFixed(1)} ms wall; CPU ${x.groupedCpuMs!.toFixed(1)} ms vs ${x.loopCpuMs!.toFixed(1)} ms (CPU ratio ${(x.loopCpuMs! / x.groupedCpuMs!).toFixed(2)})` })),
        },
        {
          title: 'MoE training throughput', peer: 'dense gpt-tiny (same active MLP compute per token)', about: 'forward + backward of one batch, one process; moe-tiny = 8 experts top-2 of width F/2 in every second block',
          rows: moe && dense ? [{ case: `moe-tiny (${moe.params} params) vs gpt-tiny (${dense.params})`, unit: 'tokens/s', athanor: moe.tokensPerSec as number, peer: dense.tokensPerSec as number, ratio: ratioOf(moe.tokensPerSec as number, dense.tokensPerSec as number), notes: `per CPU-second: ${Math.round(moe.tokensPerCpuSec as number)} vs ${Math.round(dense.tokensPerCpuSec as number)} (ratio ${ratioOf(moe.tokensPerCpuSec as number, dense.tokensPerCpuSec as number)?.toFixed(2)})` }] : [],
        },
        {
          title: 'All-to-all-v, 4 ranks', peer: 'MPI_Alltoallv (OpenMPI, C, same run)', about: `MB/s each rank sends to the 3 others; Athanor on 2 "nodes" (127.0.0.2 / .3, TCP between, Unix sockets within); ${r.a2a.notes.join('; ')}`,
          rows: r.a2a.rows.flatMap((x) => [
            { case: `flat, ${bytesHuman(x.bytesPerPair!)} per pair`, unit: 'MB/s', athanor: x.flatMBs, peer: x.mpiMBs, ratio: ratioOf(x.flatMBs, x.mpiMBs) },
            { case: `hierarchical, ${bytesHuman(x.bytesPerPair!)} per pair`, unit: 'MB/s', athanor: x.hierarchicalMBs, peer: x.mpiMBs, ratio: ratioOf(x.hierarchicalMBs, x.mpiMBs), notes: `hierarchical / flat ${ratioOf(x.hierarchicalMBs, x.flatMBs)?.toFixed(2) ?? '–'}; counts known (as in EP): ${x.hierarchicalKnownCountsMBs?.toFixed(1) ?? '–'} MB/s` },
          ]),
        },
      ];
    },
  },
  {
    name: 'zero-memory',
    title: 'memory per rank for each ZeRO stage and HSDP (gpt-small, 8 layers, dp=1/2/4)',
    async run(quick, log) {
      const { runZeroMemoryBench, defaultCases } = await import('./zero-memory-bench.js');
      return runZeroMemoryBench({ steps: quick ? 3 : 4, reps: quick ? 1 : 3, cases: defaultCases(quick), log });
    },
    tables: (rows: ZeroMemoryRow[]) => [{
      title: 'ZeRO memory per rank', peer: '-', about: 'gpt-small with 8 layers, seq 64, micro-batch 1, ranks x 1 thread; rank 0 measured peak array-buffer bytes, every rank\'s peak RSS, the runtime\'s accounting',
      rows: rows.map((r) => ({ case: r.label, unit: 'MiB (peak array buffers, rank 0)', athanor: r.peakArrayBuffersMB, peer: null, ratio: null,
        notes: `peak RSS per rank ${r.rankPeakRssMB.map((m) => m.toFixed(0)).join(', ')} MiB${r.modelStateMB !== null ? `; ZeRO-3 state model ${r.modelStateMB.toFixed(0)} MiB` : ''}; ${r.tokensPerSec.toFixed(0)} tokens/s; ${r.layout.replace(/^.*per-rank state(, allocated)?: /, '')}` })),
    }],
  },
  {
    name: 'offload',
    title: 'parallel.offload=disk against in-memory optimizer state (gpt-small tokens/s)',
    async run(quick, log) {
      const { runOffloadBench } = await import('./offload-bench.js');
      return runOffloadBench({ quick, log });
    },
    tables: (r: { rows: { config: string; memory: number; disk: number; perRunMemory: number[]; perRunDisk: number[] }[] }) => [{
      title: 'Disk offload', peer: 'the same run with state in memory', about: 'gpt-small, fp32 master weights + AdamW moments streamed from a per-rank file (parallel.offload=disk) vs in memory; median per-step tokens/s over interleaved reps; ratio > 1 means offload is faster',
      rows: r.rows.map((x) => ({ case: x.config, unit: 'tokens/s', athanor: x.disk, peer: x.memory, ratio: ratioOf(x.disk, x.memory),
        notes: `offload runs ${x.perRunDisk.map((v) => v.toFixed(0)).join(', ')}; in-memory runs ${x.perRunMemory.map((v) => v.toFixed(0)).join(', ')}` })),
    }],
  },
  {
    name: 'accuracy',
    title: 'gpt-tiny validation curve vs the PyTorch reference trainer (several minutes)',
    async run(quick, log) {
      const { runAccuracyBench } = await import('./accuracy-bench.js');
      return runAccuracyBench({ log, steps: quick ? 100 : undefined });
    },
    tables: (r: AccuracyResult) => [{
      title: 'Accuracy vs PyTorch', peer: 'tools/train-ref.py (PyTorch)', about: 'gpt-tiny on data/demo/corpus.txt, same prepared data, config and schedule; validation loss',
      rows: r.athanor.map((a) => {
        const p = r.torch.find((x) => x.step === a.step);
        return { case: `step ${a.step}`, unit: 'val loss', athanor: a.valLoss, peer: p?.valLoss ?? null, ratio: p ? p.valLoss / a.valLoss : null };
      }),
    }],
  },
];

export const GROUPS: Record<string, string[]> = {
  ops: ['ops-basic', 'ops-nn'],
  gpt: ['gpt-train'],
  embedding: ['embedding-server'],
  recsys: ['recsys-capacity', 'recsys-hybrid'],
  all: BENCHES.map((b) => b.name),
};
