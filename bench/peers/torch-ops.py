#!/usr/bin/python3
"""PyTorch timings of the single ops Athanor benchmarks: the peer numbers for bench/ kernels.

Usage:
  /usr/bin/python3 bench/peers/torch-ops.py [--threads N] [--reps 7] [--min-rep-s 0.02] [SPEC | -]
SPEC is JSON on argv ("-" or no argument with a pipe: read stdin; nothing: the default set):
  {"threads": 2, "reps": 7, "ops": [{"op": "add", "n": 1048576}, ...]}   or just the ops list.
Ops and their size fields:
  {"op": "add", "n"}                 c = a + b
  {"op": "gelu", "n"}                y = gelu_tanh(x)                         (F.gelu approximate='tanh')
  {"op": "gelu_bwd", "n"}            dx = dy * gelu_tanh'(x)                  (aten.gelu_backward)
  {"op": "softmax", "rows", "cols"}  y = softmax(x, dim=-1)
  {"op": "softmax_bwd", "rows", "cols"}  dx = y * (dy - sum(dy * y))      (aten._softmax_backward_data)
  {"op": "layernorm", "n", "c"}      y = layer_norm(x (N, C), w, b, eps 1e-5) (aten.native_layer_norm)
  {"op": "layernorm_bwd", "n", "c"}  dx, dw, db                               (aten.native_layer_norm_backward)
  {"op": "cross_entropy", "n", "v"}  mean CE of logits (N, V) vs int64 targets, forward + backward (autograd)
  {"op": "adamw", "n"}               one torch.optim.AdamW step on a flat float32 param of N
                                     (lr 1e-3, betas (0.9, 0.95), eps 1e-8, wd 0.1); timed for the
                                     single-tensor path (foreach=False) and foreach=True (and
                                     fused=True where torch has it: 1.13 has no fused AdamW);
                                     one line each plus a "best" line
  {"op": "bf16_cast", "n"}           y = x.to(torch.bfloat16)
  {"op": "dispatch"}                 a + b on 16 floats: per-call overhead, reported in microseconds
add and bf16_cast are also timed writing into a preallocated output ("variant": "out"); the
other ops allocate their outputs as users' calls do ("variant": "alloc").

Byte counts used for GB/s (float32 = 4 bytes, bf16 = 2; the minimum traffic of one fused pass:
each input read once, each output written once; small vectors such as LayerNorm's weight, bias,
mean and rstd are ignored). The TypeScript benchmark must use the same formulas:
  add             12 * N          (read a, read b, write c)
  gelu             8 * N          (read x, write y)
  gelu_bwd        12 * N          (read x, read dy, write dx)
  softmax          8 * R * C      (read x, write y)
  softmax_bwd     12 * R * C      (read y, read dy, write dx)
  layernorm        8 * N * C      (read x, write y)
  layernorm_bwd   12 * N * C      (read x, read dy, write dx)
  cross_entropy   12 * N * V      (forward reads logits; backward reads logits, writes dlogits)
  adamw           28 * N          (read p, g, m, v; write p, m, v)
  bf16_cast        6 * N          (read 4 N, write 2 N)
  dispatch         -              (us_per_op only)

Timing: each rep runs the op `inner` times back to back; inner doubles from 1 (these runs are
the warm-up) until a rep takes >= --min-rep-s; one more warm-up rep, then --reps (>= 7) timed reps; median_s and min_s are seconds
per single op. Both torch's intra-op pool and OpenBLAS's pool are set to --threads.

Output: one JSON line per op (per variant):
  {"op", "variant", "shape": {...}, "threads", "reps", "inner", "median_s", "min_s", "bytes",
   "gb_per_s" (bytes / median_s / 1e9), "gb_per_s_best" (bytes / min_s / 1e9)};
  dispatch lines carry "us_per_op" instead of bytes.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from gpt_ref import set_threads  # noqa: E402

DEFAULT_OPS = [
    {"op": "dispatch"},
    {"op": "add", "n": 1 << 20}, {"op": "add", "n": 1 << 24},
    {"op": "gelu", "n": 1 << 20}, {"op": "gelu", "n": 1 << 24},
    {"op": "gelu_bwd", "n": 1 << 24},
    {"op": "softmax", "rows": 8 * 8 * 256, "cols": 256},
    {"op": "softmax_bwd", "rows": 8 * 8 * 256, "cols": 256},
    {"op": "layernorm", "n": 2048, "c": 512}, {"op": "layernorm_bwd", "n": 2048, "c": 512},
    {"op": "cross_entropy", "n": 2048, "v": 8192},
    {"op": "adamw", "n": 1 << 20}, {"op": "adamw", "n": 21_130_240},
    {"op": "bf16_cast", "n": 1 << 24},
]


def timeit(fn, reps, min_rep_s):
    def run(k):
        t = time.perf_counter()
        for _ in range(k):
            fn()
        return time.perf_counter() - t

    run(1)  # first touch of outputs and lazily created state (AdamW moments)
    inner = 1
    while True:  # double until one rep is long enough for the timer and the scheduler
        if run(inner) >= min_rep_s or inner >= 1 << 20:
            break
        inner *= 2
    run(inner)
    times = [run(inner) / inner for _ in range(reps)]
    return statistics.median(times), min(times), inner


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def cases(spec):
    """Yields (variant, shape, bytes, fn) for one op spec."""
    op = spec["op"]
    if op == "add":
        n = int(spec["n"])
        a, b, c = randn(n), randn(n), torch.empty(n)
        yield "alloc", {"n": n}, 12 * n, lambda: a + b
        yield "out", {"n": n}, 12 * n, lambda: torch.add(a, b, out=c)
    elif op == "gelu":
        n = int(spec["n"])
        x = randn(n)
        yield "alloc", {"n": n}, 8 * n, lambda: F.gelu(x, approximate="tanh")
    elif op == "gelu_bwd":
        n = int(spec["n"])
        x, dy = randn(n), randn(n)
        yield "alloc", {"n": n}, 12 * n, lambda: torch.ops.aten.gelu_backward(dy, x, approximate="tanh")
    elif op == "softmax":
        r, c = int(spec["rows"]), int(spec["cols"])
        x = randn(r, c)
        yield "alloc", {"rows": r, "cols": c}, 8 * r * c, lambda: torch.softmax(x, dim=-1)
    elif op == "softmax_bwd":
        r, c = int(spec["rows"]), int(spec["cols"])
        y, dy = torch.softmax(randn(r, c), dim=-1), randn(r, c)
        yield "alloc", {"rows": r, "cols": c}, 12 * r * c, \
            lambda: torch.ops.aten._softmax_backward_data(dy, y, -1, torch.float32)
    elif op == "layernorm":
        n, c = int(spec["n"]), int(spec["c"])
        x, w, b = randn(n, c), randn(c), randn(c)
        yield "alloc", {"n": n, "c": c}, 8 * n * c, lambda: torch.ops.aten.native_layer_norm(x, [c], w, b, 1e-5)
    elif op == "layernorm_bwd":
        n, c = int(spec["n"]), int(spec["c"])
        x, w, b, dy = randn(n, c), randn(c), randn(c), randn(n, c)
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [c], w, b, 1e-5)
        yield "alloc", {"n": n, "c": c}, 12 * n * c, \
            lambda: torch.ops.aten.native_layer_norm_backward(dy, x, [c], mean, rstd, w, b, [True, True, True])
    elif op == "cross_entropy":
        n, v = int(spec["n"]), int(spec["v"])
        logits = randn(n, v).requires_grad_(True)
        targets = torch.randint(0, v, (n,))

        def ce():
            logits.grad = None
            F.cross_entropy(logits, targets).backward()
        yield "alloc", {"n": n, "v": v}, 12 * n * v, ce
    elif op == "adamw":
        n = int(spec["n"])
        variants = [("single_tensor", dict(foreach=False)), ("foreach", dict(foreach=True))]
        try:
            torch.optim.AdamW([torch.zeros(1, requires_grad=True)], fused=True)
            variants.append(("fused", dict(fused=True)))
        except (TypeError, RuntimeError, ValueError):
            pass
        for name, kw in variants:
            p = randn(n).requires_grad_(True)
            p.grad = randn(n) * 1e-3
            opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)
            yield name, {"n": n}, 28 * n, opt.step
    elif op == "bf16_cast":
        n = int(spec["n"])
        x, y = randn(n), torch.empty(n, dtype=torch.bfloat16)
        yield "alloc", {"n": n}, 6 * n, lambda: x.to(torch.bfloat16)
        yield "out", {"n": n}, 6 * n, lambda: y.copy_(x)
    elif op == "dispatch":
        n = int(spec.get("n", 16))
        a, b, c = randn(n), randn(n), torch.empty(n)
        yield "alloc", {"n": n}, None, lambda: a + b
        yield "out", {"n": n}, None, lambda: torch.add(a, b, out=c)
    else:
        raise ValueError(f"torch-ops: unknown op {op!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--min-rep-s", type=float, default=0.02)
    a = ap.parse_args()

    if a.spec == "-" or (a.spec is None and not sys.stdin.isatty()):
        text = sys.stdin.read().strip()
        spec = json.loads(text) if text else {}
    elif a.spec is not None:
        spec = json.loads(a.spec)
    else:
        spec = {}
    if isinstance(spec, list):
        spec = {"ops": spec}
    threads = a.threads or int(spec.get("threads", 1))
    reps = max(7, a.reps or int(spec.get("reps", 7)))
    ops = spec.get("ops") or DEFAULT_OPS

    blas = set_threads(threads)
    torch.manual_seed(0)
    for s in ops:
        results = []
        for variant, shape, nbytes, fn in cases(s):
            if s["op"] == "cross_entropy":
                med, mn, inner = timeit(fn, reps, a.min_rep_s)
            else:
                with torch.no_grad():
                    med, mn, inner = timeit(fn, reps, a.min_rep_s)
            rec = {"op": s["op"], "variant": variant, "shape": shape, "threads": threads, "reps": reps,
                   "inner": inner, "median_s": med, "min_s": mn}
            if nbytes is None:
                rec["us_per_op"] = round(med * 1e6, 3)
            else:
                rec["bytes"] = nbytes
                rec["gb_per_s"] = round(nbytes / med / 1e9, 3)
                rec["gb_per_s_best"] = round(nbytes / mn / 1e9, 3)
            results.append(rec)
            print(json.dumps(rec), flush=True)
        if s["op"] == "adamw":
            best = min(results, key=lambda r: r["median_s"])
            print(json.dumps(dict(best, variant="best", best_of=best["variant"])), flush=True)
    print(json.dumps({"op": "_env", "torch": torch.__version__, "threads": threads, "openblas": blas,
                      "torch_threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
