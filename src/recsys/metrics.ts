// Binary-classification metrics for CTR models.
type Num = ArrayLike<number>;

/**
 * Exact ROC AUC by sorting: the probability that a random positive scores above a random
 * negative, ties counting one half (average ranks). NaN when a class is absent.
 */
export function aucExact(scores: Num, labels: Num): number {
  const n = scores.length;
  if (labels.length !== n) throw new Error(`aucExact: ${n} scores but ${labels.length} labels`);
  const idx = new Int32Array(n);
  for (let i = 0; i < n; i++) idx[i] = i;
  const s = Float64Array.from(scores);
  idx.sort((a, b) => s[a]! - s[b]!);
  let pos = 0, rankSum = 0;
  for (let i = 0; i < n;) {
    let j = i + 1;
    while (j < n && s[idx[j]!] === s[idx[i]!]) j++;
    const avgRank = (i + 1 + j) / 2; // ranks i+1 .. j
    for (let k = i; k < j; k++) if (labels[idx[k]!]! > 0.5) { pos++; rankSum += avgRank; }
    i = j;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) return NaN;
  return (rankSum - (pos * (pos + 1)) / 2) / (pos * neg);
}

/** O(P*N) definition, for tests. */
export function aucBruteForce(scores: Num, labels: Num): number {
  let num = 0, pairs = 0;
  for (let i = 0; i < scores.length; i++) {
    if (!(labels[i]! > 0.5)) continue;
    for (let j = 0; j < scores.length; j++) {
      if (labels[j]! > 0.5) continue;
      pairs++;
      num += scores[i]! > scores[j]! ? 1 : scores[i] === scores[j] ? 0.5 : 0;
    }
  }
  return pairs ? num / pairs : NaN;
}

/** Mean binary log-loss (natural log). `x` are logits, or probabilities when `probabilities` is set. */
export function logLoss(x: Num, labels: Num, probabilities = false): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const y = labels[i]! > 0.5 ? 1 : 0;
    if (probabilities) {
      const p = Math.min(Math.max(x[i]!, 1e-15), 1 - 1e-15);
      s -= y ? Math.log(p) : Math.log(1 - p);
    } else {
      // log(1 + e^z) - y z, stable for either sign of z.
      const z = x[i]!;
      s += Math.max(z, 0) - y * z + Math.log1p(Math.exp(-Math.abs(z)));
    }
  }
  return s / x.length;
}
