// Shared harness of the kernel micro-benchmarks (ops-basic, ops-nn, optim).

// Seconds per call of fn: the inner repeat count doubles until one rep lasts minRep seconds
// (so timer resolution and call overhead do not dominate small kernels), one warm rep, then
// `reps` timed reps; median and minimum per call.
export function timeit(fn: () => void, reps: number, minRep: number, maxInner = 1 << 20): { median: number; min: number } {
  const run = (k: number) => {
    const t = process.hrtime.bigint();
    for (let i = 0; i < k; i++) fn();
    return Number(process.hrtime.bigint() - t) / 1e9;
  };
  run(1);
  let inner = 1;
  while (run(inner) < minRep && inner < maxInner) inner *= 2;
  run(inner);
  const times: number[] = [];
  for (let r = 0; r < reps; r++) times.push(run(inner) / inner);
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)]!, min: times[0]! };
}

/**
 * The kernel benchmarks' one argument: a comma-separated list of thread counts ("1,2"),
 * or undefined for the default. Anything else exits with the usage instead of running with NaN threads.
 */
export function threadListArg(arg: string | undefined, script: string): number[] | undefined {
  if (arg === undefined) return undefined;
  const list = arg.split(',').map(Number);
  if (!list.every((n) => Number.isInteger(n) && n > 0)) {
    console.error(`${script}: expected a comma-separated list of thread counts (e.g. 1,2), got '${arg}'\nusage: node dist/bench/${script}.js [THREADS]`);
    process.exit(2);
  }
  return list;
}
