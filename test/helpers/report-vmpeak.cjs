// Preloaded into a child process (NODE_OPTIONS=--require ...) by the bigger-than-RAM
// test: prints the process's peak virtual size at exit, the quantity `ulimit -v` bounds.
process.on('exit', () => {
  try {
    const m = /^VmPeak:\s+(\d+) kB/m.exec(require('fs').readFileSync('/proc/self/status', 'utf8'));
    if (m) process.stderr.write(`athanor-test VmPeak ${m[1]} kB\n`);
  } catch { /* not Linux */ }
});
