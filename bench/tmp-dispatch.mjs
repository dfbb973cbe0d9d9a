import { scope } from '../dist/src/core/scope.js';
import { fromStorage, empty } from '../dist/src/core/tensor.js';
import { add } from '../dist/src/ops/elementwise.js';
const a = fromStorage(new Float32Array(16).fill(1), [16], 'float32'), b = fromStorage(new Float32Array(16).fill(2), [16], 'float32');
function t(name, fn) { for (let r = 0; r < 5; r++) { const N = 1e6; const t0 = process.hrtime.bigint(); for (let i = 0; i < N; i++) fn(); const us = Number(process.hrtime.bigint() - t0) / 1e3 / N; if (r === 4) console.log(name, us.toFixed(3), 'us'); } }
t('scope only', () => scope(() => {}));
t('empty+dispose', () => { const e = empty([16]); e.dispose(); });
t('add in scope', () => scope(() => { add(a, b); }));
t('add + dispose', () => { add(a, b).dispose(); });
