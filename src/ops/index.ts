// The differentiable ops users call, plus tensor utilities that belong with them.
export * from './elementwise.js';
export * from './unary.js';
export * from './reduce.js';
export * from './shape.js';
export * from './matmul.js';
export * from './nn.js';
export * from './attention.js';
// The same ops, also runnable on the meta device (shapes and costs only); these names
// take precedence over the star exports above.
export {
  add, sub, mul, div, neg, exp, log, sqrt, rsqrt, tanh, sigmoid, relu, gelu, silu, pow, scale, cast, where, sum, mean, max,
  reshape, contiguous, concat, gather, matmul, linear, attention, softmax, logSoftmax, crossEntropy, layerNorm, rmsNorm,
  embedding, dropout,
} from './meta.js';
