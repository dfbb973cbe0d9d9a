// Mixture-of-experts options of a GPT (model.moe.*) and their closed-form parameter and
// FLOP counts. experts = 0 means a dense model: every preset carries this block so the
// dotted CLI overrides (--model.moe.experts=8) work on any of them.

export type MoeBalance = 'aux' | 'bias' | 'swipe' | 'none';
export const MOE_BALANCE: readonly MoeBalance[] = ['aux', 'bias', 'swipe', 'none'];
export type MoeOverflow = 'drop' | 'reroute';
export const MOE_OVERFLOW: readonly MoeOverflow[] = ['drop', 'reroute'];

export interface MoeConfig {
  /** E: experts per MoE layer; 0 = dense model. */
  experts: number;
  /** K: experts per token (1 = Switch, 2 = GShard). */
  topK: number;
  /**
   * Tokens an expert takes per routing group (one sequence) = ceil(capacityFactor·T·K/E);
   * the rest are dropped (or moved by `swipe`). 0 = dropless: every token reaches its experts.
   */
  capacityFactor: number;
  /**
   * What meets an expert's capacity (capacityFactor > 0): drop = GShard, the assignments
   * over capacity are dropped in token order (moved instead by balance = swipe where there is
   * room); reroute = first, per routing group, the over-capacity experts' selection scores are
   * lowered just enough that the tokens with the smallest selection margin move to their
   * next-best expert and each expert fits (moe-reroute.ts); only what still overflows after
   * that goes to the drop / SWIPE step. Checkpoints written before this key read as drop.
   */
  overflow: MoeOverflow;
  /** An MoE MLP replaces the dense MLP in every `every`-th block (blocks every-1, 2·every-1, …). */
  every: number;
  /**
   * aux: Switch load-balancing loss; bias: DeepSeek-V3 auxiliary-loss-free bias on the
   * routing scores; swipe: BaGuaLu SWIPE, overflow tokens move to under-loaded experts;
   * none: no balancing.
   */
  balance: MoeBalance;
  /** A dense expert of width dFF that every token also goes through (DeepSeek-MoE shared expert). */
  sharedExpert: boolean;
  /** F of each expert; 0 = model.dFF. */
  dFF: number;
  /** Weight of the load-balancing loss (balance = aux). */
  auxLossCoef: number;
  /** Weight of the router z-loss (ST-MoE); 0 = off. */
  zLossCoef: number;
  /**
   * Step of the bias update (balance = bias), applied after every optimizer step to each MoE
   * layer from its global load: b_e += biasRate·δ_e, where δ_e is the bias change that alone
   * would have brought expert e's load of that step to the mean (measured from the tokens'
   * selection margins, moe-router.ts). 1 = the whole measured offset.
   */
  biasRate: number;
}

export function denseMoe(): MoeConfig {
  return { experts: 0, topK: 2, capacityFactor: 0, every: 2, balance: 'aux', sharedExpert: false, dFF: 0, auxLossCoef: 0.01, zLossCoef: 0, biasRate: 0.5, overflow: 'drop' };
}

export function moeEnabled(m: MoeConfig | undefined): m is MoeConfig {
  return !!m && m.experts > 0;
}

/** Whether block i (0-based) of an nLayer model has an MoE MLP. */
export function isMoeBlock(m: MoeConfig | undefined, i: number): boolean {
  return moeEnabled(m) && i % m.every === m.every - 1;
}

export function moeLayerCount(m: MoeConfig | undefined, nLayer: number): number {
  let n = 0;
  for (let i = 0; i < nLayer; i++) if (isMoeBlock(m, i)) n++;
  return n;
}

/** Rows one expert keeps from a routing group of `groupSize` tokens: ⌈capacityFactor·T·K/E⌉, unbounded when dropless (as moe-router.ts routes). */
export function groupCapacity(m: Pick<MoeConfig, 'experts' | 'topK' | 'capacityFactor'>, groupSize: number): number {
  return m.capacityFactor > 0 ? Math.ceil((m.capacityFactor * groupSize * m.topK) / m.experts) : Infinity;
}

export function expertFF(m: MoeConfig, dFF: number): number {
  return m.dFF > 0 ? m.dFF : dFF;
}

export function validateMoeConfig(m: MoeConfig | undefined, nLayer: number, where = 'model.moe'): void {
  if (!m) return;
  const int = (k: keyof MoeConfig, min: number) => {
    const v = m[k] as number;
    if (!Number.isInteger(v) || v < min) throw new Error(`${where}.${k} must be an integer >= ${min}, got ${v}`);
  };
  int('experts', 0);
  if (m.experts === 0) return;
  int('topK', 1);
  int('every', 1);
  int('dFF', 0);
  if (m.topK > m.experts) throw new Error(`${where}.topK (${m.topK}) must not exceed ${where}.experts (${m.experts})`);
  if (m.every > nLayer) throw new Error(`${where}.every (${m.every}) exceeds model.nLayer (${nLayer}): no block would be an MoE block`);
  if (!(m.capacityFactor >= 0) || !Number.isFinite(m.capacityFactor)) throw new Error(`${where}.capacityFactor must be >= 0 (0 = dropless), got ${m.capacityFactor}`);
  if (!MOE_BALANCE.includes(m.balance)) throw new Error(`${where}.balance must be one of ${MOE_BALANCE.join(', ')}, got '${m.balance}'`);
  // undefined: a checkpoint's config from before the key existed (= drop)
  if (m.overflow !== undefined && !MOE_OVERFLOW.includes(m.overflow)) throw new Error(`${where}.overflow must be one of ${MOE_OVERFLOW.join(', ')}, got '${m.overflow}'`);
  if (m.overflow === 'reroute' && m.capacityFactor === 0) throw new Error(`${where}.overflow = reroute fits each routing group into the experts' capacity; set ${where}.capacityFactor > 0`);
  if (m.balance === 'swipe' && m.capacityFactor === 0) throw new Error(`${where}.balance = swipe reassigns tokens that overflow an expert's capacity; set ${where}.capacityFactor > 0`);
  for (const k of ['auxLossCoef', 'zLossCoef', 'biasRate'] as const) {
    if (!(m[k] >= 0) || !Number.isFinite(m[k])) throw new Error(`${where}.${k} must be a finite number >= 0, got ${m[k]}`);
  }
}

/** Parameters of one MoE MLP (router + E experts + optional shared expert) at width C. */
export function moeLayerParams(m: MoeConfig, C: number, dFF: number): { total: number; active: number } {
  const F = expertFF(m, dFF);
  const expert = F * C + F + C * F + C;
  const router = m.experts * C;
  const shared = m.sharedExpert ? expert : 0;
  return { total: router + m.experts * expert + shared, active: router + m.topK * expert + shared };
}

/** Matmul FLOPs per token of one MoE MLP, forward (2 per multiply-add): router + K experts + shared. */
export function moeLayerFlops(m: MoeConfig, C: number, dFF: number): number {
  const F = expertFF(m, dFF);
  return 2 * (m.experts * C + (m.topK + (m.sharedExpert ? 1 : 0)) * 2 * C * F);
}
