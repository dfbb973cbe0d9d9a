#!/usr/bin/python3
"""PyTorch matmul GFLOP/s in fp32 and bf16 for bench/gemm-precision-bench.ts (one round).

Usage: /usr/bin/python3 bench/peers/torch-gemm-precision.py THREADS MIN_REP_S 'JSON list of [m, n, k, form]'
form: NN, NT (b stored (n, k), as Linear weights) or TN (a stored (k, m)).
Each shape: warm-up (a call over 0.5 s: one more call, the better of the two is reported), then `inner` calls doubled until a rep lasts MIN_REP_S, then 3 timed reps;
prints one JSON line per (shape, dtype): {"m","n","k","form","dtype","gflops" (best of the 3 reps)}.
bf16 is torch.matmul on bfloat16 tensors (what autocast('cpu', bfloat16) runs for a Linear).
"""
import json, sys, time
import torch

threads, min_rep, shapes = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
for m, n, k, form in shapes:
    for dt in (torch.float32, torch.bfloat16):
        a = torch.randn(k, m).to(dt) if form == 'TN' else torch.randn(m, k).to(dt)
        b = torch.randn(n, k).to(dt) if form == 'NT' else torch.randn(k, n).to(dt)
        f = (lambda: a.t() @ b) if form == 'TN' else (lambda: a @ b.t()) if form == 'NT' else (lambda: a @ b)
        t0 = time.perf_counter(); f(); first = time.perf_counter() - t0
        if first > 0.5:
            # CPUs without native bf16 run torch's scalar fallback (seconds per call): one more timed call.
            t0 = time.perf_counter(); f(); best = min(first, time.perf_counter() - t0)
            print(json.dumps({"m": m, "n": n, "k": k, "form": form, "dtype": str(dt).replace('torch.', ''), "gflops": 2 * m * n * k / best / 1e9}), flush=True)
            continue
        inner = 1
        while True:
            t = time.perf_counter()
            for _ in range(inner): f()
            if time.perf_counter() - t >= min_rep or inner >= 1 << 12: break
            inner *= 2
        best = float('inf')
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(inner): f()
            best = min(best, (time.perf_counter() - t) / inner)
        print(json.dumps({"m": m, "n": n, "k": k, "form": form, "dtype": str(dt).replace('torch.', ''), "gflops": 2 * m * n * k / best / 1e9}), flush=True)
