#!/usr/bin/python3
"""PyTorch reference trainer for the DESIGN.md GPT, reading the same Megatron MMIDIDX data as Athanor.

Usage:
  /usr/bin/python3 tools/train-ref.py --data-dir DIR [--n-layer 4 --n-head 8 --d-model 512 --d-ff 2048
      --vocab 8192 --seq 256 --batch 8 --steps 1000 --lr 6e-4 --warmup 100 --min-lr 6e-5
      --weight-decay 0.1 --grad-clip 1.0 --eval-every 100 --eval-batches 20 --threads 2 --seed 0
      --out-jsonl FILE]

Data: DIR/train.{bin,idx} and DIR/val.{bin,idx}. All sequences of a split are one token stream
(in .idx order); window i is stream[i*T : i*T + T + 1] (inputs = [:-1], targets = [1:]),
for i in [0, (len - 1) // T). Training order: rng = numpy.random.default_rng(seed), then
rng.permutation(n_windows) once per epoch; batches are consecutive runs of `batch` windows
of that order, continuing into the next epoch's permutation. Validation: the first
eval-batches * batch windows of val in file order (same every eval), mean of batch losses.

Model init: torch.manual_seed(seed), GPT-2 init (tools/gpt_ref.py).
Optimizer: AdamW betas (0.9, 0.95), eps 1e-8, weight decay on dim >= 2 params only.
LR at step s (0-based): s < warmup: lr * (s + 1) / warmup; else cosine from lr to min-lr over
[warmup, steps): min_lr + 0.5 (lr - min_lr)(1 + cos(pi * (s - warmup) / max(1, steps - warmup))).
Gradient clipping: global L2 norm over all params to grad-clip (0 disables).

Output, one JSON object per line to stdout and --out-jsonl:
  {"step": s, "loss": train loss of step s (before its update), "lr": lr used,
   "tokens_per_s": batch*seq / wall time of step s, "grad_norm": pre-clip norm,
   "val_loss": only on steps where (s + 1) % eval-every == 0 or s is the last}
then a final {"done": true, "steps", "params", "mean_tokens_per_s", "final_val_loss"}.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_ref import GPT, count_params, param_groups, set_threads  # noqa: E402

IDX_MAGIC = b"MMIDIDX\x00\x00"
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}


def load_stream(prefix):
    """Tokens of every sequence of <prefix>.bin, in .idx order, as one 1-D array."""
    for ext in (".idx", ".bin"):
        if not os.path.exists(prefix + ext):
            sys.exit(f"{prefix}{ext}: not found (expected Megatron MMIDIDX train/val .bin/.idx in --data-dir)")
    with open(prefix + ".idx", "rb") as f:
        head = f.read(34)
        if len(head) < 34 or head[:9] != IDX_MAGIC:
            sys.exit(f"{prefix}.idx: not a Megatron MMIDIDX index (bad magic)")
        version = int.from_bytes(head[9:17], "little")
        if version != 1:
            sys.exit(f"{prefix}.idx: field 'version' is {version}, expected 1")
        code = head[17]
        if code not in DTYPES:
            sys.exit(f"{prefix}.idx: field 'dtype' has unknown code {code}")
        n_seq = int.from_bytes(head[18:26], "little")
        n_doc = int.from_bytes(head[26:34], "little")
        lengths = np.frombuffer(f.read(4 * n_seq), dtype="<i4").astype(np.int64)
        pointers = np.frombuffer(f.read(8 * n_seq), dtype="<i8")
        _ = n_doc  # document boundaries do not matter for a flat stream
    dtype = np.dtype(DTYPES[code]).newbyteorder("<")
    data = np.memmap(prefix + ".bin", dtype=np.uint8, mode="r")
    itemsize = dtype.itemsize
    expect = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * itemsize if n_seq else np.zeros(0, np.int64)
    total = int(lengths.sum())
    if np.array_equal(pointers, expect):
        if total * itemsize > data.size:
            sys.exit(f"{prefix}.bin: {data.size} bytes, index needs {total * itemsize}")
        return np.frombuffer(data, dtype=dtype, count=total)
    parts = [np.frombuffer(data, dtype=dtype, count=int(n), offset=int(p)) for p, n in zip(pointers, lengths)]
    return np.concatenate(parts)


class Windows:
    def __init__(self, stream, T):
        self.stream, self.T = stream, T
        self.n = (len(stream) - 1) // T
        if self.n <= 0:
            raise ValueError(f"stream of {len(stream)} tokens is shorter than one window of {T + 1}")

    def batch(self, ids):
        T = self.T
        x = np.stack([self.stream[i * T:i * T + T + 1] for i in ids]).astype(np.int64)
        return torch.from_numpy(x[:, :-1].copy()), torch.from_numpy(x[:, 1:].copy())


def train_batches(win, B, seed):
    rng = np.random.default_rng(seed)
    buf = []
    while True:
        for i in rng.permutation(win.n):
            buf.append(int(i))
            if len(buf) == B:
                yield win.batch(buf)
                buf = []


def lr_at(s, a):
    if s < a.warmup:
        return a.lr * (s + 1) / a.warmup
    progress = (s - a.warmup) / max(1, a.steps - a.warmup)
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model, win, B, n_batches):
    model.eval()
    losses = []
    n = min(n_batches, win.n // B) if win.n >= B else 0
    if n == 0:
        ids_list = [list(range(win.n))]
    else:
        ids_list = [list(range(b * B, (b + 1) * B)) for b in range(n)]
    for ids in ids_list:
        x, y = win.batch(ids)
        _, loss = model(x, y)
        losses.append(loss.item())
    model.train()
    return float(np.mean(losses))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--d-ff", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--min-lr", type=float, default=6e-5)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-jsonl", default=None)
    a = ap.parse_args()

    set_threads(a.threads)
    train = Windows(load_stream(os.path.join(a.data_dir, "train")), a.seq)
    val_path = os.path.join(a.data_dir, "val")
    val = Windows(load_stream(val_path), a.seq) if os.path.exists(val_path + ".idx") else None
    top = int(train.stream.max())
    if top >= a.vocab:
        sys.exit(f"{a.data_dir}/train.bin: token id {top} >= --vocab {a.vocab}")

    torch.manual_seed(a.seed)
    model = GPT(a.vocab, a.seq, a.n_layer, a.n_head, a.d_model, a.d_ff)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, a.weight_decay), lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    out = open(a.out_jsonl, "w") if a.out_jsonl else None

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    batches = train_batches(train, a.batch, a.seed)
    tps = []
    val_loss = None
    for s in range(a.steps):
        lr = lr_at(s, a)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(batches)
        t0 = time.perf_counter()
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip))
        else:
            gn = float(torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])))
        opt.step()
        dt = time.perf_counter() - t0
        tps.append(a.batch * a.seq / dt)
        rec = {"step": s, "loss": loss.item(), "lr": lr, "tokens_per_s": round(tps[-1], 2), "grad_norm": gn}
        if val is not None and ((s + 1) % a.eval_every == 0 or s == a.steps - 1):
            val_loss = evaluate(model, val, a.batch, a.eval_batches)
            rec["val_loss"] = val_loss
        emit(rec)
    emit({"done": True, "steps": a.steps, "params": count_params(model),
          "mean_tokens_per_s": round(float(np.mean(tps[1:] if len(tps) > 1 else tps)), 2),
          "final_val_loss": val_loss})
    if out:
        out.close()


if __name__ == "__main__":
    main()
