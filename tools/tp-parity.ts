// Per-layer parity of a tensor-parallel layout against the single-process model.
//
//   athanor launch --nproc-per-node 2 -- node dist/tools/tp-parity.js [--sp] [--break h.1.mlp]
//       [--preset gpt-tiny] [--model.nLayer=2 ...] [--tol 1e-4]
//
// Every rank builds the single-process GPT and its tensor-parallel shard from the same
// seed, runs both on the same batch (forward + backward), and compares, layer by layer:
// the layer's output activation (the rank's slice of it where the layout splits it) and
// the gradients of the layer's own parameters (the rank's shard). Rank 0 prints one row
// per layer with the worst difference over ranks (max |tp - ref| / max |ref|) and names
// the first layer that diverges: in forward order by activation, else in backward order
// by gradient. Exit code 1 when a layer diverges. `--break LAYER` removes the all-reduce
// (or reduce-scatter) at the exit of that layer's row-parallel projection on purpose, to
// show the tool pointing at it.
import { initProcessGroup } from '../src/runtime/init.js';
import { CommThread } from '../src/runtime/comm-thread.js';
import { buildMesh } from '../src/parallel/mesh.js';
import { ThreadGroup } from '../src/parallel/thread-group.js';
import { buildTensorParallelGpt } from '../src/parallel/plans/gpt.js';
import { globalRuns, localShape } from '../src/parallel/placement.js';
import { presetConfig } from '../src/train/config.js';
import { applyOverrides } from '../src/train/overrides.js';
import { GPT } from '../src/nn/gpt.js';
import { wrapMethod, type Module } from '../src/nn/module.js';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { scope } from '../src/core/scope.js';
import { Rng } from '../src/core/rng.js';
import { backward } from '../src/autograd/tape.js';
import { linear, add, slice } from '../src/ops/index.js';

const argv = process.argv.slice(2);
const flag = (k: string): string | undefined => { const i = argv.indexOf(`--${k}`); return i >= 0 ? argv[i + 1] : undefined; };

type Fwd = Module & { forward: (...a: never[]) => Tensor };

/** Layers compared, in forward order: [name, module]. */
function layersOf(m: GPT): [string, Fwd][] {
  const out: [string, Fwd][] = [['wte', m.wte as Fwd]];
  m.h.forEach((b, i) => {
    // An MoE block's layer is its MoE MLP (replicated router, experts split over F).
    const mlp: [string, Fwd] = b.moe ? [`h.${i}.moe`, b.moe as unknown as Fwd] : [`h.${i}.mlp`, b.mlp as Fwd];
    out.push([`h.${i}.ln_1`, b.ln_1 as Fwd], [`h.${i}.attn`, b.attn as Fwd], [`h.${i}.ln_2`, b.ln_2 as Fwd], mlp, [`h.${i}`, b as Fwd]);
  });
  out.push(['ln_f', m.ln_f as Fwd], ['lm_head', m.lm_head as Fwd]);
  return out;
}

/** Records each layer's (last) output, kept past the scope. */
function capture(m: GPT): Map<string, Tensor> {
  const acts = new Map<string, Tensor>();
  for (const [name, mod] of layersOf(m)) {
    wrapMethod(mod, 'forward', (next) => ((...a: never[]) => {
      const y = (next as (...a: never[]) => Tensor)(...a);
      acts.get(name)?.dispose();
      acts.set(name, y.keep());
      return y;
    }) as Fwd['forward']);
  }
  return acts;
}

/** The part of the reference tensor this rank's tensor corresponds to (the one dimension that differs is split `size` ways). */
function sliceLike(ref: Float32Array, refShape: readonly number[], shape: readonly number[], rank: number, size: number): Float32Array {
  const dim = refShape.findIndex((d, i) => d !== shape[i]);
  if (dim < 0) return ref;
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let o = 0;
  for (const r of globalRuns({ globalShape: refShape, dim, blocks: 1, rank, size })) { out.set(ref.subarray(r.start, r.start + r.length), o); o += r.length; }
  return out;
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num = Math.max(num, Math.abs(a[i]! - b[i]!)); den = Math.max(den, Math.abs(b[i]!)); }
  return num / Math.max(den, 1e-12);
}

async function main(): Promise<number> {
  const cfg = presetConfig(flag('preset') ?? 'gpt-tiny');
  const overrides: Record<string, string> = {};
  for (const a of argv) { const m = /^--(model\.[\w.]+)=(.*)$/.exec(a); if (m) overrides[m[1]!] = m[2]!; }
  applyOverrides(cfg, overrides, 'command line');
  const sp = argv.includes('--sp');
  const broken = flag('break');
  const tol = Number(flag('tol') ?? '1e-4');
  const seed = 1337;
  const pg = await initProcessGroup();
  const mesh = buildMesh(pg, { tp: pg.size, dp: 1, pp: 1 });
  const thread = await CommThread.start(pg, { prefix: 'athanor/tp' });
  try {
    const group = new ThreadGroup(thread.newGroup([...mesh.tp.ranks], 'tp'), mesh.coords.tp, pg.size);
    const { rank, size } = group;
    const ref = new GPT(cfg.model, { seed });
    const { model: tp, shards } = buildTensorParallelGpt(cfg.model, group, { seed, recompute: false, sequenceParallel: sp });
    if (broken) {
      const mod = layersOf(tp).find(([n]) => n === broken)?.[1] as (Module & { c_proj?: Module }) | undefined;
      if (!mod?.c_proj) throw new Error(`--break ${broken}: expected an attention or MLP layer (h.<i>.attn or h.<i>.mlp)`);
      const proj = mod.c_proj as Fwd;
      // The row-parallel projection without its exit collective: each rank keeps its partial sum.
      // Under sequence parallelism it keeps its own rows of the partial sum instead of reduce-scattering.
      wrapMethod(proj, 'forward', () => ((x: Tensor) => {
        let y = linear(x, proj.getParam('weight'));
        if (sp) { const Tl = y.shape[1]! / size; y = slice(y, 1, rank * Tl, (rank + 1) * Tl); }
        return add(y, proj.getParam('bias'));
      }) as unknown as Fwd['forward']);
    }
    const refActs = capture(ref), tpActs = capture(tp);
    const T = cfg.model.seqLen, B = 2;
    const rng = new Rng(5);
    const ids = Int32Array.from({ length: B * T }, () => rng.int(cfg.model.vocabSize));
    const tgt = Int32Array.from({ length: B * T }, () => rng.int(cfg.model.vocabSize));
    const losses = [ref, tp].map((m) => scope(() => {
      const l = m.loss(fromStorage(ids, [B, T], 'int32'), fromStorage(tgt, [B, T], 'int32'));
      backward(l);
      return l.item();
    }));
    const refParams = new Map(ref.namedParameters());
    const rows: { layer: string; act: number; grad: number }[] = [];
    for (const [name, mod] of layersOf(tp)) {
      const a = tpActs.get(name)!, r = refActs.get(name)!;
      const act = relDiff(a.toArray() as unknown as Float32Array, sliceLike(Float32Array.from(r.toArray()), r.shape, a.shape, rank, size));
      let grad = 0;
      // The layer's own parameters (for a block: ln_1..mlp are listed on their own rows).
      const own = name.match(/^h\.\d+$/) ? [] : mod.namedParameters(`${name}.`);
      for (const [pn, p] of own) {
        const rp = refParams.get(pn)!;
        const s = shards.get(pn);
        let want = Float32Array.from(rp.grad!.toArray());
        if (s) {
          const w = new Float32Array(localShape(s).reduce((x, y) => x * y, 1));
          let o = 0;
          for (const run of globalRuns(s)) { w.set(want.subarray(run.start, run.start + run.length), o); o += run.length; }
          want = w;
        }
        grad = Math.max(grad, relDiff(Float32Array.from(p.grad!.toArray()), want));
      }
      rows.push({ layer: name, act, grad });
    }
    // Worst over ranks: every rank compares its own slice.
    const buf = new Float32Array(rows.flatMap((r) => [r.act, r.grad]).concat([Math.abs(losses[0]! - losses[1]!) / Math.abs(losses[0]!)]));
    await pg.allReduce(buf, { op: 'max' }).wait();
    rows.forEach((r, i) => { r.act = buf[2 * i]!; r.grad = buf[2 * i + 1]!; });
    const firstAct = rows.find((r) => !(r.act <= tol));
    const firstGrad = [...rows].reverse().find((r) => !(r.grad <= tol));
    if (pg.rank === 0) {
      console.log(`tp-parity: tp=${size}${sp ? ' + sp' : ''}${broken ? `, exit collective of ${broken} removed on purpose` : ''}; loss ${losses[1]} vs ${losses[0]} (rel ${buf[buf.length - 1]!.toExponential(2)}); tolerance ${tol}`);
      console.log(`${'layer'.padEnd(14)} ${'activation'.padStart(11)} ${'gradient'.padStart(11)}`);
      for (const r of rows) console.log(`${r.layer.padEnd(14)} ${r.act.toExponential(2).padStart(11)} ${(r.layer.match(/^h\.\d+$/) ? '–' : r.grad.toExponential(2)).padStart(11)}${r === firstAct || (!firstAct && r === firstGrad) ? '   <- first divergence' : ''}`);
      if (firstAct) console.log(`first diverging layer: ${firstAct.layer} (activation)`);
      else if (firstGrad) console.log(`first diverging layer: ${firstGrad.layer} (gradient)`);
      else console.log('no layer diverges');
    }
    // Every rank exits non-zero on divergence, and the launcher stops the others as soon as
    // one does: wait until rank 0 has printed its report (console.log to a pipe is
    // synchronous on Linux) so that the report is never cut off.
    await pg.allReduce(new Float32Array(1), { op: 'max' }).wait();
    return firstAct || firstGrad ? 1 : 0;
  } finally {
    await thread.close();
    await pg.destroy();
  }
}

main().then((code) => process.exit(code), (e: unknown) => { console.error(e); process.exit(2); });
