// GPT decoder (pre-LN), the architecture of DESIGN.md. Plain single-process code:
// tensor, pipeline and data parallelism are applied to it from src/parallel/.
import type { Tensor } from '../core/tensor.js';
import { Rng } from '../core/rng.js';
import type { DType } from '../core/dtype.js';
import { Module, type Device, type InitContext } from './module.js';
import { Linear, LayerNorm, Embedding } from './layers.js';
import { checkpoint } from '../autograd/checkpoint.js';
import { releaseActivation as done } from '../autograd/saved-pack.js';
import {
  add, mul, neg, gelu, reshape, permute, slice, concat, attention, crossEntropy, dropout,
} from '../ops/index.js';
import { fromStorage } from '../core/tensor.js';
import { untrack } from '../core/scope.js';
import { type GptConfig, validateGptConfig } from './gpt-config.js';
import { materialize } from './materialize.js';
import { isMoeBlock } from './moe-config.js';
import { MoeMlp, type MoeStats } from './moe.js';

export class CausalSelfAttention extends Module {
  readonly c_attn: Linear;
  readonly c_proj: Linear;
  constructor(ctx: InitContext, readonly cfg: GptConfig) {
    super();
    const C = cfg.dModel;
    this.c_attn = this.child('c_attn', new Linear(ctx, C, 3 * C));
    this.c_proj = this.child('c_proj', new Linear(ctx, C, C, { std: 0.02 / Math.sqrt(2 * cfg.nLayer) }));
  }

  forward(x: Tensor, rope: Rope | null, rng: Rng): Tensor {
    const D = this.cfg.dModel / this.cfg.nHead;
    // Heads held = rows of c_attn / 3D: all of them here, a slice when a tensor-parallel
    // plan has split c_attn by heads (the code is the same).
    const H = this.c_attn.weight.shape[0]! / (3 * D), C = H * D;
    const qkv = this.c_attn.forward(x); // (B, T, 3C)
    // B, T from c_attn's output: under sequence parallelism x is a sequence shard and
    // c_attn gathers the full sequence.
    const [B, T] = qkv.shape as [number, number, number];
    // (B,T,3,H,D) → three (B,H,T,D) strided views; attention reads them through ld, no copy.
    const r = reshape(qkv, [B, T, 3, H, D]);
    const part = (i: number) => permute(reshape(slice(r, 2, i, i + 1), [B, T, H, D]), [0, 2, 1, 3]);
    let q = part(0), k = part(1);
    const v = part(2);
    if (rope) {
      q = rope.apply(q);
      k = rope.apply(k);
    }
    const att = attention(q, k, v, { causal: true });
    // done(t): the forward no longer reads t; its fp32 buffer is freed when every
    // backward reader kept a 16-bit copy (train.precision=bf16), else nothing happens.
    for (const t of [qkv, q, k, v]) done(t);
    const yc = reshape(permute(att, [0, 2, 1, 3]), [B, T, C]);
    let y = this.c_proj.forward(yc);
    done(yc);
    done(att);
    return this.cfg.dropout > 0 ? dropout(y, this.cfg.dropout, { rng, training: this.training }) : y;
  }
}

export class Mlp extends Module {
  readonly c_fc: Linear;
  readonly c_proj: Linear;
  constructor(ctx: InitContext, readonly cfg: GptConfig) {
    super();
    this.c_fc = this.child('c_fc', new Linear(ctx, cfg.dModel, cfg.dFF));
    this.c_proj = this.child('c_proj', new Linear(ctx, cfg.dFF, cfg.dModel, { std: 0.02 / Math.sqrt(2 * cfg.nLayer) }));
  }
  forward(x: Tensor, rng: Rng): Tensor {
    const u = this.c_fc.forward(x);
    const a = gelu(u);
    done(u);
    const y = this.c_proj.forward(a);
    done(a);
    return this.cfg.dropout > 0 ? dropout(y, this.cfg.dropout, { rng, training: this.training }) : y;
  }
}

export class Block extends Module {
  readonly ln_1: LayerNorm;
  readonly attn: CausalSelfAttention;
  readonly ln_2: LayerNorm;
  /** The dense MLP; an MoE block (moe !== null) has none, so code that reaches for it checks `moe` first. */
  readonly mlp: Mlp;
  readonly moe: MoeMlp | null;
  constructor(ctx: InitContext, cfg: GptConfig, useMoe = false) {
    super();
    this.ln_1 = this.child('ln_1', new LayerNorm(ctx, cfg.dModel, cfg.lnEps));
    this.attn = this.child('attn', new CausalSelfAttention(ctx, cfg));
    this.ln_2 = this.child('ln_2', new LayerNorm(ctx, cfg.dModel, cfg.lnEps));
    this.moe = useMoe ? this.child('moe', new MoeMlp(ctx, cfg.moe!, cfg.dModel, cfg.dFF, cfg.nLayer, cfg.dropout)) : null;
    this.mlp = useMoe ? (null as unknown as Mlp) : this.child('mlp', new Mlp(ctx, cfg));
  }
  forward(x: Tensor, rope: Rope | null, rng: Rng): Tensor {
    const a = this.ln_1.forward(x);
    const att = this.attn.forward(a, rope, rng);
    done(a);
    const h = add(x, att);
    done(att);
    const m = this.ln_2.forward(h);
    const y = this.moe ? this.moe.forward(m, rng) : this.mlp.forward(m, rng);
    done(m);
    const out = add(h, y);
    done(y);
    done(h);
    return out;
  }
}

/** Rotary position embedding as composite ops: x·cos + rotate_half(x)·sin. */
export class Rope {
  private readonly cos: Tensor;
  private readonly sin: Tensor;
  constructor(T: number, D: number, dtype: DType, base = 10000) {
    const cos = new Float64Array(T * D), sin = new Float64Array(T * D);
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < D / 2; i++) {
        const ang = t / base ** ((2 * i) / D);
        for (const j of [i, i + D / 2]) {
          cos[t * D + j] = Math.cos(ang);
          sin[t * D + j] = Math.sin(ang);
        }
      }
    }
    const table = (v: Float64Array) => {
      const t = fromStorage(dtype === 'float64' ? v : Float32Array.from(v), [T, D], dtype);
      untrack(t);
      return t.keep();
    };
    this.cos = table(cos);
    this.sin = table(sin);
  }
  apply(x: Tensor): Tensor {
    const T = x.shape[2]!, D = x.shape[3]!;
    const cos = slice(this.cos, 0, 0, T), sin = slice(this.sin, 0, 0, T);
    const x1 = slice(x, 3, 0, D / 2), x2 = slice(x, 3, D / 2, D);
    const rot = concat([neg(x2), x1], 3);
    return add(mul(x, cos), mul(rot, sin));
  }
}

export interface GptOptions {
  device?: Device;
  dtype?: DType;
  seed?: number;
  /** Recompute each block's activations in backward instead of keeping them. */
  recompute?: boolean;
  /**
   * Leave the parameters on the meta device for the caller to materialize (a parallel
   * plan materializes only this rank's shards; see nn/materialize.ts).
   */
  deferInit?: boolean;
}

export class GPT extends Module {
  readonly wte: Embedding;
  readonly wpe: Embedding | null;
  readonly h: Block[] = [];
  readonly ln_f: LayerNorm;
  readonly lm_head: Linear;
  readonly rng: Rng;
  recompute: boolean;
  private readonly rope: Rope | null;

  constructor(readonly cfg: GptConfig, opts: GptOptions = {}) {
    super();
    validateGptConfig(cfg);
    const dtype = opts.dtype ?? 'float32';
    this.rng = new Rng(opts.seed ?? 0);
    // Parameters are declared on the meta device, then each is filled from its own
    // stream (seed, name): the values do not depend on construction order or layout.
    const device = opts.device ?? 'cpu';
    const ctx: InitContext = { device: 'meta', dtype, rng: this.rng };
    this.wte = this.child('wte', new Embedding(ctx, cfg.vocabSize, cfg.dModel));
    this.wpe = cfg.positions === 'learned' ? this.child('wpe', new Embedding(ctx, cfg.seqLen, cfg.dModel)) : null;
    for (let i = 0; i < cfg.nLayer; i++) this.h.push(this.child(`h.${i}`, new Block(ctx, cfg, isMoeBlock(cfg.moe, i))));
    this.ln_f = this.child('ln_f', new LayerNorm(ctx, cfg.dModel, cfg.lnEps));
    this.lm_head = this.child('lm_head', new Linear(ctx, cfg.dModel, cfg.vocabSize, { bias: false }));
    if (cfg.tieEmbeddings) this.lm_head.setParam('weight', this.wte.weight);
    this.rope = cfg.positions === 'rotary' ? new Rope(cfg.seqLen, cfg.dModel / cfg.nHead, dtype) : null;
    this.recompute = opts.recompute ?? false;
    if (device !== 'meta' && !opts.deferInit) materialize(this, opts.seed ?? 0);
  }

  /** Token + position embeddings for idx (B, T). */
  embed(idx: Tensor): Tensor {
    const T = idx.shape[1]!;
    if (T > this.cfg.seqLen) throw new Error(`GPT: sequence length ${T} exceeds model.seqLen ${this.cfg.seqLen}`);
    let x = this.wte.forward(idx);
    if (this.wpe) {
      const e = x;
      x = add(e, slice(this.wpe.weight, 0, 0, T));
      done(e);
    }
    return this.cfg.dropout > 0 ? dropout(x, this.cfg.dropout, { rng: this.rng, training: this.training }) : x;
  }

  runBlock(i: number, x: Tensor): Tensor {
    const b = this.h[i]!;
    // MoE blocks are not recomputed: a second forward would route again and record its
    // auxiliary loss and statistics twice.
    if (this.recompute && this.training && !b.moe) {
      return checkpoint((xs) => b.forward(xs[0]!, this.rope, this.rng), [x], b.parameters(), this.rng);
    }
    return b.forward(x, this.rope, this.rng);
  }

  /** Logits (B, T, V). */
  head(x: Tensor): Tensor {
    const n = this.ln_f.forward(x);
    const logits = this.lm_head.forward(n);
    done(n);
    return logits;
  }

  forward(idx: Tensor): Tensor {
    let x = this.embed(idx);
    for (let i = 0; i < this.h.length; i++) {
      const nx = this.runBlock(i, x);
      done(x);
      x = nx;
    }
    const logits = this.head(x);
    done(x);
    return logits;
  }

  /**
   * Mean cross-entropy of next-token prediction; targets (B, T) int32, -100 ignored. In
   * training, MoE blocks add their auxiliary losses (load balancing, router z-loss).
   */
  loss(idx: Tensor, targets: Tensor): Tensor {
    const logits = this.forward(idx);
    const [B, T, V] = logits.shape as [number, number, number];
    let l = crossEntropy(reshape(logits, [B * T, V]), reshape(targets, [B * T]));
    done(logits);
    for (const m of this.moeLayers()) if (m.auxLoss) { l = add(l, m.auxLoss); m.auxLoss = null; }
    return l;
  }

  /** The MoE MLPs, in block order (empty for a dense model). */
  moeLayers(): MoeMlp[] {
    return this.h.flatMap((b) => (b.moe ? [b.moe] : []));
  }

  /** Routing statistics of every MoE layer since the last call (resets them). */
  takeMoeStats(): MoeStats[] {
    return this.moeLayers().map((m) => m.takeStats());
  }
}

