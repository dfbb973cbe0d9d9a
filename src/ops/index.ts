// The differentiable ops users call, plus tensor utilities that belong with them.
export * from './elementwise.js';
export * from './unary.js';
export * from './reduce.js';
export * from './shape.js';
export * from './matmul.js';
export * from './nn.js';
export * from './attention.js';
