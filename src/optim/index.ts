export * from './optimizer.js';
export * from './sgd.js';
export * from './adamw.js';
export * from './adagrad.js';
export * from './clip-grad.js';
export * from './lr-schedule.js';
export * from './loss-scaler.js';
