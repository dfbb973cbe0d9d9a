// Data pipeline throughput: `prepare` on a generated corpus (fortune-format text
// plus .jsonl) with a byte-level tokenizer, then TokenLoader batches/s over the
// prepared train split. Run: node dist/bench/data-bench.js [corpusMB]
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { IndexedDataset, SeededRng, TokenLoader, prepare } from '../src/data/index.js';

export interface DataBenchResult {
  corpusBytes: number;
  documents: number;
  tokens: number;
  prepareSeconds: number;
  prepareMBps: number;
  /** user+sys CPU seconds of this process during prepare (stabler than wall time on a busy machine). */
  prepareCpuSeconds: number;
  loader: { B: number; T: number; batches: number; seconds: number; batchesPerSec: number; tokensPerSec: number }[];
}

const WORDS = ['the', 'of', 'training', 'gradient', 'token', 'model', 'layer', 'data', 'parallel', 'loss',
  '床前明月光', '疑是地上霜', '举头望明月', '低头思故乡', '人工智能', '源', '模型', 'Athanor', 'Megatron', 'batch'];

function generateCorpus(dir: string, targetBytes: number): number {
  const rng = new SeededRng(2022);
  const doc = (): string => {
    const n = 20 + rng.nextInt(400);
    const parts: string[] = [];
    for (let i = 0; i < n; i++) parts.push(WORDS[rng.nextInt(WORDS.length)]!, i % 17 === 16 ? '\n' : ' ');
    return parts.join('');
  };
  let total = 0, fileNo = 0;
  mkdirSync(join(dir, 'corpus'), { recursive: true });
  while (total < targetBytes) {
    const jsonl = fileNo % 3 === 2;
    const chunks: string[] = [];
    let size = 0;
    while (size < 4 << 20 && total + size < targetBytes) {
      const d = doc();
      const s = jsonl ? JSON.stringify({ text: d }) + '\n' : `${d}\n%\n`;
      chunks.push(s);
      size += Buffer.byteLength(s);
    }
    writeFileSync(join(dir, 'corpus', `part-${String(fileNo).padStart(3, '0')}.${jsonl ? 'jsonl' : 'txt'}`), chunks.join(''));
    total += size;
    fileNo++;
  }
  return total;
}

export async function runDataBench(options: { corpusMB?: number; log?: (s: string) => void } = {}): Promise<DataBenchResult> {
  const log = options.log ?? ((s: string) => console.log(s));
  const dir = mkdtempSync(join(tmpdir(), 'athanor-data-bench-'));
  try {
    const corpusBytes = generateCorpus(dir, (options.corpusMB ?? 50) * 1e6);
    const enc = new TextEncoder();
    const tokenizer = { encode: (s: string) => enc.encode(s), eosId: 256, vocabSize: 257 };
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const meta = await prepare({ inputs: [join(dir, 'corpus')], outDir: join(dir, 'out'), tokenizer, valFraction: 0.005 });
    const prepareSeconds = (performance.now() - t0) / 1000;
    const cu = process.cpuUsage(c0);
    const prepareCpuSeconds = (cu.user + cu.system) / 1e6;
    const prepareMBps = meta.bytesRead / 1e6 / prepareSeconds;
    log(`prepare: ${(meta.bytesRead / 1e6).toFixed(1)} MB, ${meta.documents} docs, ${meta.tokens} tokens in ${prepareSeconds.toFixed(2)} s = ${prepareMBps.toFixed(1)} MB/s (CPU ${prepareCpuSeconds.toFixed(2)} s = ${(meta.bytesRead / 1e6 / prepareCpuSeconds).toFixed(1)} MB per CPU-second)`);

    const ds = IndexedDataset.open(join(dir, 'out', 'train'));
    const loader: DataBenchResult['loader'] = [];
    for (const [B, T] of [[8, 256], [16, 1024]] as const) {
      const L = new TokenLoader(ds, { T, seed: 1 });
      L.next(B); // builds the epoch permutation outside the timing
      const batches = 2000;
      const s = performance.now();
      for (let i = 0; i < batches; i++) L.next(B);
      const seconds = (performance.now() - s) / 1000;
      const r = { B, T, batches, seconds, batchesPerSec: batches / seconds, tokensPerSec: (batches * B * T) / seconds };
      loader.push(r);
      log(`loader B=${B} T=${T}: ${r.batchesPerSec.toFixed(0)} batches/s (${(r.tokensPerSec / 1e6).toFixed(1)} M tokens/s)`);
    }
    ds.close();
    return { corpusBytes, documents: meta.documents, tokens: meta.tokens, prepareSeconds, prepareMBps, prepareCpuSeconds, loader };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const mb = process.argv[2] ? Number(process.argv[2]) : undefined;
  runDataBench({ corpusMB: mb }).catch((e) => { console.error(e); process.exitCode = 1; });
}
