#!/usr/bin/python3
"""PyTorch training speed of `gpt-small` (DESIGN.md): the peer number for Athanor's GPT benchmark.

Usage: /usr/bin/python3 bench/peers/torch-gpt.py [--threads 2] [--steps 10] [--warmup-steps 2]
           [--batch 8] [--seq 256] [--foreach auto|on|off] [--grad-clip 0] [--ddp N]
           [--autocast off|bf16] [--model gpt-small|gpt-tiny]

--ddp N: N processes on this machine, DistributedDataParallel over gloo (the peer of
Athanor's `athanor launch --nproc-per-node N -- train --parallel.dp=N`), each with
--threads threads and batch/N sequences, so the global batch stays --batch. Every rank
starts from the same seed, as Athanor's ranks do. A step is timed on rank 0 from its
forward to the end of its optimizer step (DDP's gradient allreduce sits in between, so
the slowest rank sets the pace). Bool buffers (a causal mask, if a model registers one)
are excluded from DDP's state broadcast: PyTorch 1.13's gloo cannot broadcast bool tensors.

Model: tools/gpt_ref.py GPT, L4 H8 C512 F2048 V8192 T256 B8, untied, learned positions
(21,130,240 parameters, asserted). Inputs: random tokens (torch.manual_seed(0)), a fresh batch
per step, generated outside the timed region. One training step =
  forward (logits + mean cross-entropy) | backward | optimizer (zero_grad, optional global-norm
  clip, AdamW lr 6e-4 betas (0.9, 0.95) eps 1e-8 wd 0.1 on dim >= 2 params).
Both torch's intra-op pool and OpenBLAS's pool (Debian torch's float32 matmul) get --threads.

Output: one JSON line
  {"bench": "torch-gpt", "model": a.model, "params", "threads", "batch", "seq", "steps",
   "tokens_per_s" (median over timed steps of batch*seq / step seconds),
   "tokens_per_s_mean", "tokens_per_s_best" (fastest step: least disturbed by other load),
   "step_s", "forward_s", "backward_s", "optimizer_s" (medians per step),
   "peak_rss_mb" (ru_maxrss), "torch", "openblas" (library whose thread count was set), "foreach"}
"""
import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
from gpt_ref import GPT, count_params, param_groups, set_threads  # noqa: E402

GPT_SMALL = dict(vocab=8192, seq=256, n_layer=4, n_head=8, d_model=512, d_ff=2048)
GPT_SMALL_PARAMS = 21_130_240
# gpt-tiny (the demo model): L4 H4 C128 F512 V2048 T128, untied, learned positions.
GPT_TINY = dict(vocab=2048, seq=128, n_layer=4, n_head=4, d_model=128, d_ff=512)
MODELS = {"gpt-small": (GPT_SMALL, GPT_SMALL_PARAMS), "gpt-tiny": (GPT_TINY, 1_334_016)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", choices=sorted(MODELS), default="gpt-small",
                    help="model shape (gpt-tiny: use --batch 16 --seq 128 for its preset batch)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=GPT_SMALL["seq"], help="tokens per sequence (<= 256)")
    ap.add_argument("--foreach", choices=["auto", "on", "off"], default="auto",
                    help="AdamW implementation: torch's default, foreach, or single-tensor loop")
    ap.add_argument("--grad-clip", type=float, default=0.0, help="global-norm clip in the optimizer phase; 0 = off")
    ap.add_argument("--ddp", type=int, default=0, help="processes for DistributedDataParallel over gloo; 0 = one process, no DDP")
    ap.add_argument("--autocast", choices=["off", "bf16"], default="off",
                    help="bf16: forward under torch.autocast('cpu', dtype=torch.bfloat16) (fp32 master weights)")
    a = ap.parse_args()
    if a.ddp > 0:
        if a.batch % a.ddp:
            ap.error(f"--batch {a.batch} must be divisible by --ddp {a.ddp}")
        mp.spawn(run, args=(a, free_port()), nprocs=a.ddp, join=True)
    else:
        run(0, a, None)


def run(rank, a, port):
    world = max(a.ddp, 1)
    blas = set_threads(a.threads)
    if a.ddp > 0:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    shape, expect = MODELS[a.model]
    if a.seq > shape["seq"]:
        raise SystemExit(f"--seq {a.seq} exceeds {a.model}'s context {shape['seq']}")
    model = GPT(**shape)
    n_params = count_params(model)
    if rank == 0:
        print(f"{a.model} parameters: {n_params:,}", file=sys.stderr)
    assert n_params == expect, f"{a.model} has {n_params} parameters, expected {expect}"
    model.train()
    foreach = {"auto": None, "on": True, "off": False}[a.foreach]
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=6e-4, betas=(0.9, 0.95), eps=1e-8, foreach=foreach)
    net = model
    if a.ddp > 0:
        bool_buffers = [n for n, b in model.named_buffers() if b.dtype == torch.bool]
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, bool_buffers)
        net = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        torch.manual_seed(1000 + rank)  # each rank draws its own batches
    local_batch = a.batch // world

    fwd, bwd, optim, step = [], [], [], []
    for s in range(a.warmup_steps + a.steps):
        x = torch.randint(0, shape["vocab"], (local_batch, a.seq))
        y = torch.randint(0, shape["vocab"], (local_batch, a.seq))
        t0 = time.perf_counter()
        if a.autocast == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                _, loss = net(x, y)
        else:
            _, loss = net(x, y)
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
        if rank == 0:
            print(f"step {s}{' (warm-up)' if s < a.warmup_steps else ''}: loss {loss.item():.4f} "
                  f"{t3 - t0:.3f}s (f {t1 - t0:.3f} b {t2 - t1:.3f} o {t3 - t2:.3f})", file=sys.stderr)

    if a.ddp > 0:
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return
    tokens = a.batch * a.seq  # global: every rank's sequences count
    med = statistics.median
    print(json.dumps({
        "bench": "torch-gpt", "model": a.model, "params": n_params, "threads": a.threads,
        "batch": a.batch, "seq": a.seq, "steps": a.steps, "warmup_steps": a.warmup_steps,
        "tokens_per_s": round(tokens / med(step), 2),
        "tokens_per_s_mean": round(tokens * len(step) / sum(step), 2),
        "tokens_per_s_best": round(tokens / min(step), 2),
        "step_s": round(med(step), 4), "forward_s": round(med(fwd), 4), "backward_s": round(med(bwd), 4),
        "optimizer_s": round(med(optim), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch": torch.__version__, "openblas": blas, "foreach": a.foreach, "grad_clip": a.grad_clip,
        "ddp": a.ddp, "autocast": a.autocast, "backend": "gloo" if a.ddp > 0 else None,
    }), flush=True)


if __name__ == "__main__":
    main()
