// Public surface of the data pipeline: Megatron indexed datasets, prepare, loaders.
export * from './indexed-dataset-format.js';
export * from './indexed-dataset-writer.js';
export * from './indexed-dataset-reader.js';
export * from './documents.js';
export * from './input-files.js';
export * from './prepare.js';
export * from './seeded-rng.js';
export * from './token-loader.js';
export { AtomicStreamWriter } from './atomic-stream.js';
