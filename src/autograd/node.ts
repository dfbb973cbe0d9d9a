// Tape nodes and the attribute type of every differentiable op. Adding an op means
// adding its attributes here and its rule in grad-rules.ts; the type system then
// refuses a table that misses a rule, and the gradient-check test refuses a rule
// that has no check.
import type { Tensor } from '../core/tensor.js';

export interface OpAttrs {
  // element-wise binary (NumPy broadcasting)
  add: Record<string, never>;
  sub: Record<string, never>;
  mul: Record<string, never>;
  div: Record<string, never>;
  // element-wise unary
  neg: Record<string, never>;
  exp: Record<string, never>;
  log: Record<string, never>;
  sqrt: Record<string, never>;
  rsqrt: Record<string, never>;
  pow: { exponent: number };
  tanh: Record<string, never>;
  sigmoid: Record<string, never>;
  relu: Record<string, never>;
  gelu: Record<string, never>;
  silu: Record<string, never>;
  scale: { factor: number };
  // reductions
  sum: { axes: number[]; keepDims: boolean };
  mean: { axes: number[]; keepDims: boolean };
  max: { axis: number; keepDims: boolean };
  // layout (views where possible)
  reshape: { shape: number[] };
  permute: { dims: number[] };
  expand: { shape: number[] };
  slice: { axis: number; start: number; end: number };
  contiguous: Record<string, never>;
  concat: { axis: number };
  gather: { axis: number };
  where: Record<string, never>;
  cast: { to: string };
  // neural-network ops
  matmul: { transA: boolean; transB: boolean };
  softmax: { axis: number };
  logSoftmax: { axis: number };
  crossEntropy: { ignoreIndex: number };
  layerNorm: { eps: number };
  rmsNorm: { eps: number };
  embedding: Record<string, never>;
  dropout: { p: number };
  attention: { causal: boolean; scale: number };
  // mixture of experts (src/ops/moe.ts): token permutation, grouped expert GEMM, combine,
  // and the all-to-all exchange of expert parallelism
  moeDispatch: Record<string, never>;
  moeCombine: Record<string, never>;
  groupedMatmul: Record<string, never>;
  allToAllV: { group: string };
  // DLRM's pairwise feature interaction (ops/dot-interaction.ts)
  dotInteraction: Record<string, never>;
  // collectives over a tensor-parallel group (ops/group.ts)
  groupCopy: { group: import('../ops/group.js').GroupCollectives };
  groupReduce: { group: import('../ops/group.js').GroupCollectives };
  groupGather: { group: import('../ops/group.js').GroupCollectives; axis: number };
  groupScatter: { group: import('../ops/group.js').GroupCollectives; axis: number };
  vocabParallelCrossEntropy: { group: import('../ops/group.js').GroupCollectives; vocabStart: number; ignoreIndex: number };
  gatherLinear: { group: import('../ops/group.js').GroupCollectives; axis: number };
  // activation recomputation (see checkpoint.ts)
  checkpoint: import('./checkpoint.js').CheckpointCtx;
}

export type OpName = keyof OpAttrs;

export interface Node<K extends OpName = OpName> {
  /** Creation order; reverse order is a valid topological order for backward. */
  readonly seq: number;
  readonly op: K;
  readonly attrs: OpAttrs[K];
  readonly inputs: readonly Tensor[];
  readonly out: Tensor;
  /** Tensors the rule needs beyond inputs/output (e.g. softmax probabilities); freed after use. */
  saved: Tensor[];
  /** Small non-tensor state the rule needs (e.g. a permutation). */
  ctx?: unknown;
}

/**
 * A gradient rule accumulates d(loss)/d(input) into each input that requires grad
 * (use `accumulateGrad` from autograd/accumulate.ts), given `gOut` = d(loss)/d(out).
 * Rules run with the tape off and must not modify gOut.
 */
export type GradRule<K extends OpName> = (node: Node<K>, gOut: Tensor) => void;

export type GradRuleTable = { [K in OpName]: GradRule<K> };
