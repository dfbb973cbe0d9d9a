#!/usr/bin/python3
"""Write test/golden/tiny-gpt.safetensors: a tiny GPT (DESIGN.md reference architecture) with
its inputs, logits, loss, gradients and 10 AdamW steps, all float32, from PyTorch.

Usage: /usr/bin/python3 tools/gen-golden.py [--out test/golden/tiny-gpt.safetensors]

Config: V=64 T=8 L=2 H=2 C=16 F=64, untied, learned positions, dropout 0, B=2.
torch.manual_seed(0), then GPT-2 init (tools/gpt_ref.py), then idx = randint(0, V, (B, T)),
targets = randint(0, V, (B, T)) with targets[0, 3] = -100 (exercises ignore_index).

Keys (all little-endian):
  input.idx (I32, [B,T]), input.targets (I32, [B,T])
  param.<name>        initial parameters (F32), names as in DESIGN.md
  out.logits          (F32, [B,T,V]) from the initial parameters
  out.loss            (F32, []) mean CE over targets != -100
  grad.<name>         d out.loss / d param (F32)
  adamw.losses        (F32, [10]) loss before each of 10 AdamW steps on the same batch
  param_after.<name>  parameters after the 10 steps
AdamW: torch.optim.AdamW(foreach=False), lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay
0.1 on params with dim >= 2 and 0 on the rest (two param groups), no clipping, constant lr.

The safetensors file is written by hand (no safetensors package): u64 LE header length N,
N bytes of JSON padded with spaces to a multiple of 8, then the raw tensor bytes.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_ref import GPT, param_groups  # noqa: E402

CFG = dict(vocab=64, seq=8, n_layer=2, n_head=2, d_model=16, d_ff=64)
B = 2
STEPS = 10
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

DTYPES = {np.dtype("<f4"): "F32", np.dtype("<i4"): "I32"}


def write_safetensors(path, tensors, metadata):
    header = {}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        arr = arr if arr.flags.c_contiguous else arr.copy()  # ascontiguousarray would make 0-d arrays 1-d
        dt = arr.dtype.newbyteorder("<")
        if dt not in DTYPES:
            raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
        raw = arr.astype(dt, copy=False).tobytes()
        header[name] = {"dtype": DTYPES[dt], "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    inv = {"F32": "<f4", "I32": "<i4"}
    out = {}
    for name, h in header.items():
        b, e = h["data_offsets"]
        out[name] = np.frombuffer(data[base + b:base + e], dtype=inv[h["dtype"]]).reshape(tuple(h["shape"]))
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "golden", "tiny-gpt.safetensors")))
    args = ap.parse_args()

    torch.manual_seed(0)
    model = GPT(**CFG)
    model.train()  # no dropout exists, so train and eval are identical
    V, T = CFG["vocab"], CFG["seq"]
    idx = torch.randint(0, V, (B, T), dtype=torch.int32)
    targets = torch.randint(0, V, (B, T), dtype=torch.int32)
    targets[0, 3] = -100

    tensors = {"input.idx": idx.numpy(), "input.targets": targets.numpy()}
    names = [n for n, _ in model.named_parameters()]
    for n, p in model.named_parameters():
        tensors[f"param.{n}"] = p.detach().numpy().copy()

    logits, loss = model(idx, targets)
    loss.backward()
    tensors["out.logits"] = logits.detach().numpy().copy()
    tensors["out.loss"] = np.array(loss.item(), dtype=np.float32).reshape(())
    for n, p in model.named_parameters():
        tensors[f"grad.{n}"] = p.grad.detach().numpy().copy()

    opt = torch.optim.AdamW(param_groups(model, ADAMW["weight_decay"]), lr=ADAMW["lr"], betas=ADAMW["betas"],
                            eps=ADAMW["eps"], foreach=False)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, l = model(idx, targets)
        l.backward()
        losses.append(l.item())
        opt.step()
    tensors["adamw.losses"] = np.array(losses, dtype=np.float32)
    for n, p in model.named_parameters():
        tensors[f"param_after.{n}"] = p.detach().numpy().copy()

    meta = dict(
        generator="tools/gen-golden.py", torch=torch.__version__, seed=0, batch=B,
        vocab=V, seq=T, n_layer=CFG["n_layer"], n_head=CFG["n_head"], d_model=CFG["d_model"], d_ff=CFG["d_ff"],
        tie_embeddings="false", positions="learned", dropout=0, gelu="tanh", ln_eps=1e-5,
        ignore_index=-100, init="gpt2: N(0,0.02), c_proj.weight N(0,0.02/sqrt(2L)), bias 0, ln 1/0",
        adamw_steps=STEPS, adamw_lr=ADAMW["lr"], adamw_beta1=ADAMW["betas"][0], adamw_beta2=ADAMW["betas"][1],
        adamw_eps=ADAMW["eps"], adamw_weight_decay=ADAMW["weight_decay"], adamw_decay_rule="dim>=2",
        param_names=",".join(names),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_safetensors(args.out, tensors, meta)

    back, meta_back = read_safetensors(args.out)
    assert meta_back == {k: str(v) for k, v in meta.items()}
    for k, v in tensors.items():
        assert back[k].shape == v.shape and np.array_equal(back[k], v), k
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, {len(tensors)} tensors")
    print(f"loss {loss.item():.7f}; adamw losses {' '.join(f'{x:.6f}' for x in losses)}")


if __name__ == "__main__":
    main()
