// TypeScript reference kernels for the NN op family: the fallback for float64 and
// small tensors, and the oracle the native kernels (native/nn.c) are tested
// against. Same signatures and semantics as the C versions: arrays start at
// element 0 (callers pass subarrays for offsets), rows are contiguous, backward
// kernels ACCUMULATE into gradient outputs (acc = false: the input-gradient buffer is
// uninitialised and gets overwritten), and a null gradient means "not needed".
export type F = Float32Array | Float64Array;

export function softmaxFwd(x: F, y: F, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let m = -Infinity;
    for (let j = 0; j < cols; j++) if (x[o + j]! > m) m = x[o + j]!;
    let s = 0;
    for (let j = 0; j < cols; j++) {
      const e = Math.exp(x[o + j]! - m);
      y[o + j] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let j = 0; j < cols; j++) y[o + j]! *= inv;
  }
}

export function logSoftmaxFwd(x: F, y: F, rows: number, cols: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let m = -Infinity;
    for (let j = 0; j < cols; j++) if (x[o + j]! > m) m = x[o + j]!;
    let s = 0;
    for (let j = 0; j < cols; j++) s += Math.exp(x[o + j]! - m);
    const lse = m + Math.log(s);
    for (let j = 0; j < cols; j++) y[o + j] = x[o + j]! - lse;
  }
}

/** dx += y * (dy - sum(dy * y)) */
export function softmaxBwd(y: F, dy: F, dx: F, rows: number, cols: number, acc = true): void {
  if (!acc) dx.fill(0, 0, rows * cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let s = 0;
    for (let j = 0; j < cols; j++) s += y[o + j]! * dy[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j]! += y[o + j]! * (dy[o + j]! - s);
  }
}

/** dx += dy - exp(y) * sum(dy) */
export function logSoftmaxBwd(y: F, dy: F, dx: F, rows: number, cols: number, acc = true): void {
  if (!acc) dx.fill(0, 0, rows * cols);
  for (let i = 0; i < rows; i++) {
    const o = i * cols;
    let s = 0;
    for (let j = 0; j < cols; j++) s += dy[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j]! += dy[o + j]! - Math.exp(y[o + j]!) * s;
  }
}

/** Writes lse per row; returns the summed loss over rows whose target is not ignoreIndex. */
export function crossEntropyFwd(logits: F, targets: Int32Array, lse: F, rows: number, V: number, ignoreIndex: number): number {
  let total = 0;
  for (let i = 0; i < rows; i++) {
    const o = i * V;
    let m = -Infinity;
    for (let j = 0; j < V; j++) if (logits[o + j]! > m) m = logits[o + j]!;
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(logits[o + j]! - m);
    const l = m + Math.log(s);
    lse[i] = l;
    const t = targets[i]!;
    if (t !== ignoreIndex) total += l - logits[o + t]!;
  }
  return total;
}

/** dlogits += scale * (softmax - onehot) on counted rows. */
export function crossEntropyBwd(logits: F, targets: Int32Array, lse: F, dlogits: F, rows: number, V: number, ignoreIndex: number, scale: number, acc = true): void {
  if (!acc) dlogits.fill(0, 0, rows * V);
  for (let i = 0; i < rows; i++) {
    const t = targets[i]!;
    if (t === ignoreIndex) continue;
    const o = i * V, l = lse[i]!;
    for (let j = 0; j < V; j++) dlogits[o + j]! += scale * Math.exp(logits[o + j]! - l);
    dlogits[o + t]! -= scale;
  }
}

export function layerNormFwd(x: F, w: F, b: F | null, y: F, mean: F, rstd: F, rows: number, C: number, eps: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * C;
    let s = 0;
    for (let j = 0; j < C; j++) s += x[o + j]!;
    const mu = s / C;
    let v = 0;
    for (let j = 0; j < C; j++) {
      const d = x[o + j]! - mu;
      v += d * d;
    }
    const rs = 1 / Math.sqrt(v / C + eps);
    for (let j = 0; j < C; j++) y[o + j] = (x[o + j]! - mu) * rs * w[j]! + (b ? b[j]! : 0);
    mean[i] = mu;
    rstd[i] = rs;
  }
}

/** Shared by LayerNorm (mean given) and RMSNorm (mean null: no centring). */
function normBwd(dy: F, x: F, w: F, mean: F | null, rstd: F, dx: F | null, dw: F | null, db: F | null, rows: number, C: number, acc: boolean): void {
  if (dx && !acc) dx.fill(0, 0, rows * C);
  for (let i = 0; i < rows; i++) {
    const o = i * C;
    const mu = mean ? mean[i]! : 0, rs = rstd[i]!;
    if (dx) {
      let sg = 0, sgx = 0;
      for (let j = 0; j < C; j++) {
        const g = dy[o + j]! * w[j]!;
        sg += g;
        sgx += g * (x[o + j]! - mu) * rs;
      }
      const mg = mean ? sg / C : 0, mgx = sgx / C;
      for (let j = 0; j < C; j++) {
        const xh = (x[o + j]! - mu) * rs;
        dx[o + j]! += rs * (dy[o + j]! * w[j]! - mg - xh * mgx);
      }
    }
    if (dw) for (let j = 0; j < C; j++) dw[j]! += dy[o + j]! * (x[o + j]! - mu) * rs;
    if (db) for (let j = 0; j < C; j++) db[j]! += dy[o + j]!;
  }
}

export function layerNormBwd(dy: F, x: F, w: F, mean: F, rstd: F, dx: F | null, dw: F | null, db: F | null, rows: number, C: number, acc = true): void {
  normBwd(dy, x, w, mean, rstd, dx, dw, db, rows, C, acc);
}

export function rmsNormFwd(x: F, w: F, y: F, rstd: F, rows: number, C: number, eps: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * C;
    let v = 0;
    for (let j = 0; j < C; j++) v += x[o + j]! * x[o + j]!;
    const rs = 1 / Math.sqrt(v / C + eps);
    for (let j = 0; j < C; j++) y[o + j] = x[o + j]! * rs * w[j]!;
    rstd[i] = rs;
  }
}

export function rmsNormBwd(dy: F, x: F, w: F, rstd: F, dx: F | null, dw: F | null, rows: number, C: number, acc = true): void {
  normBwd(dy, x, w, null, rstd, dx, dw, null, rows, C, acc);
}

/** out[i] = w[idx[i]] (w rows ldw apart). Indices are already range-checked. */
export function embeddingFwd(w: F, ldw: number, idx: Int32Array, out: F, n: number, C: number): void {
  for (let i = 0; i < n; i++) {
    const src = idx[i]! * ldw, dst = i * C;
    for (let j = 0; j < C; j++) out[dst + j] = w[src + j]!;
  }
}

/** dw[idx[i]] += dout[i]; duplicates add up. */
export function embeddingBwd(dout: F, idx: Int32Array, dw: F, n: number, C: number): void {
  for (let i = 0; i < n; i++) {
    const src = i * C, dst = idx[i]! * C;
    for (let j = 0; j < C; j++) dw[dst + j]! += dout[src + j]!;
  }
}

/** lowbias32 of (i * golden ^ seed): the same bits as drop_hash in native/nn.c. */
export function dropHash(seed: number, i: number): number {
  let x = (Math.imul(i >>> 0, 0x9e3779b9) ^ seed) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/** y = keep ? x * scale : 0 with keep = hash(seed, i) >= threshold; one mask bit per element. */
export function dropoutFwd(x: F, y: F, mask: Int32Array, n: number, seed: number, threshold: number, scale: number): void {
  const words = Math.ceil(n / 32);
  for (let wi = 0; wi < words; wi++) {
    let bits = 0;
    const base = wi * 32, end = Math.min(base + 32, n);
    for (let i = base; i < end; i++) {
      const keep = dropHash(seed, i) >= threshold;
      if (keep) bits |= 1 << (i - base);
      y[i] = keep ? x[i]! * scale : 0;
    }
    mask[wi] = bits;
  }
}

/** dx += dy * keep * scale */
export function dropoutBwd(dy: F, mask: Int32Array, dx: F, n: number, scale: number, acc = true): void {
  if (!acc) dx.fill(0, 0, n);
  for (let i = 0; i < n; i++) if ((mask[i >>> 5]! >>> (i & 31)) & 1) dx[i]! += dy[i]! * scale;
}

/** In place: P = softmax(scale * S) per row of `mats` Tq×Tk matrices; masked (j > i) entries become 0. */
export function attnSoftmax(S: F, mats: number, Tq: number, Tk: number, scale: number, causal: boolean): void {
  const rows = mats * Tq;
  for (let r = 0; r < rows; r++) {
    const o = r * Tk, i = r % Tq;
    const n = causal ? Math.min(i + 1, Tk) : Tk;
    let m = -Infinity;
    for (let j = 0; j < n; j++) if (scale * S[o + j]! > m) m = scale * S[o + j]!;
    let s = 0;
    for (let j = 0; j < n; j++) {
      const e = Math.exp(scale * S[o + j]! - m);
      S[o + j] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let j = 0; j < n; j++) S[o + j]! *= inv;
    for (let j = n; j < Tk; j++) S[o + j] = 0;
  }
}

/** In place on dP: dS = alpha * P * (dP - rowsum(dP * P)); masked entries become 0. */
export function attnSoftmaxBwd(P: F, dP: F, mats: number, Tq: number, Tk: number, alpha: number, causal: boolean): void {
  const rows = mats * Tq;
  for (let r = 0; r < rows; r++) {
    const o = r * Tk, i = r % Tq;
    const n = causal ? Math.min(i + 1, Tk) : Tk;
    let s = 0;
    for (let j = 0; j < n; j++) s += P[o + j]! * dP[o + j]!;
    for (let j = 0; j < n; j++) dP[o + j] = alpha * P[o + j]! * (dP[o + j]! - s);
    for (let j = n; j < Tk; j++) dP[o + j] = 0;
  }
}

/** db[j] += sum_i dy[i*ld + j] */
export function biasGrad(dy: F, db: F, rows: number, cols: number, ld: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * ld;
    for (let j = 0; j < cols; j++) db[j]! += dy[o + j]!;
  }
}

/** Each row (ld apart) of y = bias. */
export function fillRows(y: F, bias: F, rows: number, cols: number, ld: number): void {
  for (let i = 0; i < rows; i++) {
    const o = i * ld;
    for (let j = 0; j < cols; j++) y[o + j] = bias[j]!;
  }
}
