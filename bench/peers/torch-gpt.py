#!/usr/bin/python3
"""PyTorch training speed of `gpt-small` (DESIGN.md): the peer number for Athanor's GPT benchmark.

Usage: /usr/bin/python3 bench/peers/torch-gpt.py [--threads 2] [--steps 10] [--warmup-steps 2]
           [--batch 8] [--seq 256] [--foreach auto|on|off] [--grad-clip 0] [--autocast off|bf16]

Model: tools/gpt_ref.py GPT, L4 H8 C512 F2048 V8192 T256 B8, untied, learned positions
(21,130,240 parameters, asserted). Inputs: random tokens (torch.manual_seed(0)), a fresh batch
per step, generated outside the timed region. One training step =
  forward (logits + mean cross-entropy) | backward | optimizer (zero_grad, optional global-norm
  clip, AdamW lr 6e-4 betas (0.9, 0.95) eps 1e-8 wd 0.1 on dim >= 2 params).
Both torch's intra-op pool and OpenBLAS's pool (Debian torch's float32 matmul) get --threads.

Output: one JSON line
  {"bench": "torch-gpt", "model": "gpt-small", "params", "threads", "batch", "seq", "steps",
   "tokens_per_s" (median over timed steps of batch*seq / step seconds),
   "tokens_per_s_mean", "tokens_per_s_best" (fastest step: least disturbed by other load),
   "step_s", "forward_s", "backward_s", "optimizer_s" (medians per step),
   "peak_rss_mb" (ru_maxrss), "torch", "openblas" (library whose thread count was set), "foreach"}
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from gpt_ref import GPT, count_params, param_groups, set_threads  # noqa: E402

GPT_SMALL = dict(vocab=8192, seq=256, n_layer=4, n_head=8, d_model=512, d_ff=2048)
GPT_SMALL_PARAMS = 21_130_240


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=GPT_SMALL["seq"], help="tokens per sequence (<= 256)")
    ap.add_argument("--foreach", choices=["auto", "on", "off"], default="auto",
                    help="AdamW implementation: torch's default, foreach, or single-tensor loop")
    ap.add_argument("--grad-clip", type=float, default=0.0, help="global-norm clip in the optimizer phase; 0 = off")
    ap.add_argument("--autocast", choices=["off", "bf16"], default="off",
                    help="bf16: forward under torch.autocast('cpu', dtype=torch.bfloat16) (fp32 master weights)")
    a = ap.parse_args()

    blas = set_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(**GPT_SMALL)
    n_params = count_params(model)
    print(f"gpt-small parameters: {n_params:,}", file=sys.stderr)
    assert n_params == GPT_SMALL_PARAMS, f"gpt-small has {n_params} parameters, expected {GPT_SMALL_PARAMS}"
    model.train()
    foreach = {"auto": None, "on": True, "off": False}[a.foreach]
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, foreach=foreach)

    fwd, bwd, optim, step = [], [], [], []
    for s in range(a.warmup_steps + a.steps):
        x = torch.randint(0, GPT_SMALL["vocab"], (a.batch, a.seq))
        y = torch.randint(0, GPT_SMALL["vocab"], (a.batch, a.seq))
        t0 = time.perf_counter()
        if a.autocast == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, loss = model(x, y)
        else:
            _, loss = model(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if s >= a.warmup_steps:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            optim.append(t3 - t2)
            step.append(t3 - t0)
        print(f"step {s}{' (warm-up)' if s < a.warmup_steps else ''}: loss {loss.item():.4f} "
              f"{t3 - t0:.3f}s (f {t1 - t0:.3f} b {t2 - t1:.3f} o {t3 - t2:.3f})", file=sys.stderr)

    tokens = a.batch * a.seq
    med = statistics.median
    print(json.dumps({
        "bench": "torch-gpt", "model": "gpt-small", "params": n_params, "threads": a.threads,
        "batch": a.batch, "seq": a.seq, "steps": a.steps, "warmup_steps": a.warmup_steps,
        "tokens_per_s": round(tokens / med(step), 2),
        "tokens_per_s_mean": round(tokens * len(step) / sum(step), 2),
        "tokens_per_s_best": round(tokens / min(step), 2),
        "step_s": round(med(step), 4), "forward_s": round(med(fwd), 4), "backward_s": round(med(bwd), 4),
        "optimizer_s": round(med(optim), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch": torch.__version__, "openblas": blas, "foreach": a.foreach, "grad_clip": a.grad_clip, "autocast": a.autocast,
    }), flush=True)


if __name__ == "__main__":
    main()
