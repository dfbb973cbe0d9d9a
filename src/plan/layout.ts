// A parallel layout as the planner reads it: `tp=4,pp=8,dp=288,zero=1,recompute=full,...`.
// Every key is checked once, with the message naming the field.

export type Precision = 'fp32' | 'bf16';
export type Recompute = 'none' | 'full';
/** optimizer/params: to host memory (the ZeRO-Offload paper's model); disk: Athanor's parallel.offload=disk (master weights and AdamW moments in a file per rank). */
export type Offload = 'none' | 'optimizer' | 'params' | 'disk';
export type Schedule = '1f1b' | 'gpipe' | 'interleaved';
/** Expert-parallel all-to-all: one message per rank pair, or BaGuaLu's two-phase (intra-node, then one per node pair). */
export type A2a = 'flat' | 'hierarchical';

export interface Layout {
  tp: number;
  pp: number;
  dp: number;
  /** Expert parallelism: each MoE layer's experts split over ep ranks taken from dp (dp = ep × edp). */
  ep: number;
  a2a: A2a;
  zero: 0 | 1 | 2 | 3;
  /** HSDP (parallel.shardGroup): ZeRO-3 shards over groups of this many dp ranks and replicates across the dp/shardGroup groups; 0 = the whole dp group. */
  shardGroup: number;
  /** Sequence parallelism: activations outside the TP regions are split over tp too. */
  sp: boolean;
  recompute: Recompute;
  precision: Precision;
  offload: Offload;
  /** Sequences per device per micro-batch. */
  mb: number;
  /** Micro-batches per optimizer step (gradient accumulation, or pipeline micro-batches). */
  ga: number;
  schedule: Schedule;
  /** Model chunks per stage for the interleaved schedule. */
  vpp: number;
  /**
   * Expert parallelism's routing load: the rows the busiest ep rank receives per MoE layer
   * over its balanced share (plan/ep-terms.ts); absent = 1, balanced routing.
   */
  epLoad?: number;
}

export const LAYOUT_KEYS = ['tp', 'pp', 'dp', 'ep', 'a2a', 'zero', 'shardGroup', 'sp', 'recompute', 'precision', 'offload', 'mb', 'ga', 'schedule', 'vpp', 'epLoad'] as const;

export function defaultLayout(): Layout {
  return { tp: 1, pp: 1, dp: 1, ep: 1, a2a: 'flat', zero: 0, shardGroup: 0, sp: false, recompute: 'none', precision: 'fp32', offload: 'none', mb: 1, ga: 1, schedule: '1f1b', vpp: 1 };
}

export function devices(l: Layout): number {
  return l.tp * l.pp * l.dp;
}

/** Parses `k=v,k=v` over `base`; unknown keys and bad values name the field. */
export function parseLayout(s: string, base: Layout = defaultLayout(), where = '--layout'): Layout {
  const l = { ...base };
  for (const part of s.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new Error(`${where}: '${part}' is not key=value`);
    const k = part.slice(0, eq).trim(), v = part.slice(eq + 1).trim();
    const int = (min: number): number => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new Error(`${where}: field '${k}' must be an integer >= ${min}, got '${v}'`);
      return n;
    };
    const oneOf = <T extends string>(opts: readonly T[]): T => {
      if (!(opts as readonly string[]).includes(v)) throw new Error(`${where}: field '${k}' must be one of ${opts.join(', ')}, got '${v}'`);
      return v as T;
    };
    switch (k) {
      case 'tp': case 'pp': case 'dp': case 'ep': case 'mb': case 'ga': case 'vpp': l[k] = int(1); break;
      case 'shardGroup': l.shardGroup = int(0); break;
      case 'zero': l.zero = int(0) as Layout['zero']; if (l.zero > 3) throw new Error(`${where}: field 'zero' must be 0, 1, 2 or 3, got '${v}'`); break;
      case 'sp': l.sp = oneOf(['true', 'false', '1', '0'] as const) === 'true' || v === '1'; break;
      case 'recompute': l.recompute = oneOf(['none', 'full'] as const); break;
      case 'precision': l.precision = oneOf(['fp32', 'bf16'] as const); break;
      case 'offload': l.offload = oneOf(['none', 'optimizer', 'params', 'disk'] as const); break;
      case 'a2a': l.a2a = oneOf(['flat', 'hierarchical'] as const); break;
      case 'schedule': l.schedule = oneOf(['1f1b', 'gpipe', 'interleaved'] as const); break;
      case 'epLoad': {
        const n = Number(v);
        if (v === '' || !Number.isFinite(n) || n < 1) throw new Error(`${where}: field 'epLoad' must be a number >= 1 (the busiest ep rank's received rows over the balanced share), got '${v}'`);
        l.epLoad = n;
        break;
      }
      default: throw new Error(`${where}: unknown field '${k}' (fields: ${LAYOUT_KEYS.join(', ')})`);
    }
  }
  return l;
}

/** Checks the layout against the model; returns the first reason it is invalid, or null. */
export function layoutProblem(l: Layout, m: { nHead: number; nLayer: number; dFF: number; nExperts?: number; moe?: { experts: number } }): string | null {
  const nExperts = m.nExperts ?? m.moe?.experts ?? 0;
  if (m.nHead % l.tp !== 0) return `tp=${l.tp} does not divide the ${m.nHead} attention heads`;
  if (m.dFF % l.tp !== 0) return `tp=${l.tp} does not divide the feed-forward width ${m.dFF}`;
  if (l.pp * l.vpp > m.nLayer) return `pp=${l.pp}×vpp=${l.vpp} stages exceed the ${m.nLayer} layers`;
  if (l.schedule === 'interleaved' && m.nLayer % (l.pp * l.vpp) !== 0) return `interleaved schedule needs pp×vpp (${l.pp * l.vpp}) to divide ${m.nLayer} layers`;
  if (l.ep > 1 && !nExperts) return `ep=${l.ep} needs a mixture-of-experts model`;
  if ((l.epLoad ?? 1) !== 1 && l.ep === 1) return `epLoad=${l.epLoad} needs ep > 1`;
  if (l.ep > 1 && (nExperts % l.ep !== 0 || l.dp % l.ep !== 0)) return `ep=${l.ep} must divide the experts (${nExperts}) and dp (${l.dp})`;
  if (l.sp && l.tp === 1) return 'sp needs tp > 1';
  // The trainer's MoE layouts (config validation): experts split over tp or over ep, not both,
  // and no sequence parallelism (a routing group is a whole sequence).
  if (nExperts && l.ep > 1 && l.tp > 1) return `ep=${l.ep} with tp=${l.tp}: an MoE model splits its experts over tp or over ep, not both`;
  if (nExperts && l.sp) return 'sp with a mixture-of-experts model: routing needs whole sequences on each tp rank';
  if (l.zero > 0 && l.dp === 1) return `zero=${l.zero} needs dp > 1`;
  if (l.shardGroup > 0 && l.zero !== 3) return `shardGroup=${l.shardGroup} (HSDP) needs zero=3`;
  if (l.shardGroup > 0 && l.dp % l.shardGroup !== 0) return `shardGroup=${l.shardGroup} must divide dp=${l.dp}`;
  return null;
}

export function layoutString(l: Layout): string {
  const d = defaultLayout();
  const parts = [`tp=${l.tp}`, `pp=${l.pp}`, `dp=${l.dp}`];
  for (const k of ['ep', 'a2a', 'zero', 'shardGroup', 'sp', 'recompute', 'precision', 'offload', 'mb', 'ga', 'schedule', 'vpp'] as const) {
    if (l[k] !== d[k] || k === 'mb' || k === 'ga') parts.push(`${k}=${l[k]}`);
  }
  if ((l.epLoad ?? 1) !== 1) parts.push(`epLoad=${l.epLoad}`);
  return parts.join(',');
}
