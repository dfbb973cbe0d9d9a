#!/usr/bin/python3
"""Write test/golden/ops.safetensors: float32 inputs and PyTorch outputs/gradients of single ops.

Usage: /usr/bin/python3 tools/gen-golden-ops.py [--out test/golden/ops.safetensors]

torch.manual_seed(0); all tensors F32 unless noted; gradients are of sum(out * dy) for the given dy.
  gelu.x (64), gelu.y = gelu_tanh(x), gelu.dy, gelu.dx                     (x spans [-8, 8])
  softmax.x (4, 16) (row 3 has -inf entries like a causal mask), softmax.y (dim -1), softmax.dy, softmax.dx
  layernorm.x (4, 16), .weight, .bias, .y (eps 1e-5), .dy, .dx, .dweight, .dbias
  linear.x (3, 5), .weight (4, 5), .bias (4), .y = x W^T + b, .dy, .dx, .dweight, .dbias
  cross_entropy.logits (6, 10), .targets (I32, 6; one -100), .loss ([], mean over targets != -100),
    .dlogits (gradient of loss)
  adamw.p0 (32), adamw.g (32; the same gradient every step), adamw.p1 (after 1 step), adamw.p5
    (after 5 steps) for lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1 (torch.optim.AdamW);
    adamw.p5_nowd: 5 steps with weight_decay 0
  bf16.x (F32, 23: ties, +-inf, subnormals, max; no NaN: torch 1.13 turns NaN into 0xFFFF, a
    policy choice Athanor need not copy), bf16.bits (I32 holding the uint16 bf16 bit pattern of
    x.to(torch.bfloat16): round to nearest even), bf16.back (F32 of that bf16)
"""
import argparse
import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("gen_golden", os.path.join(HERE, "gen-golden.py"))
_gg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gg)


def np32(t):
    return t.detach().numpy().astype(np.float32).copy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..", "test", "golden", "ops.safetensors")))
    args = ap.parse_args()
    torch.manual_seed(0)
    T = {}

    x = torch.linspace(-8, 8, 64).requires_grad_(True)
    dy = torch.randn(64)
    y = F.gelu(x, approximate="tanh")
    y.backward(dy)
    T.update({"gelu.x": np32(x), "gelu.y": np32(y), "gelu.dy": np32(dy), "gelu.dx": np32(x.grad)})

    xs = (torch.randn(4, 16) * 3)
    xs[3, 9:] = float("-inf")
    xs = xs.requires_grad_(True)
    dy = torch.randn(4, 16)
    y = torch.softmax(xs, dim=-1)
    y.backward(dy)
    T.update({"softmax.x": np32(xs), "softmax.y": np32(y), "softmax.dy": np32(dy), "softmax.dx": np32(xs.grad)})

    x = (torch.randn(4, 16) * 2 + 1).requires_grad_(True)
    w = (1 + 0.1 * torch.randn(16)).requires_grad_(True)
    b = (0.1 * torch.randn(16)).requires_grad_(True)
    dy = torch.randn(4, 16)
    y = F.layer_norm(x, (16,), w, b, eps=1e-5)
    y.backward(dy)
    T.update({"layernorm.x": np32(x), "layernorm.weight": np32(w), "layernorm.bias": np32(b),
              "layernorm.y": np32(y), "layernorm.dy": np32(dy), "layernorm.dx": np32(x.grad),
              "layernorm.dweight": np32(w.grad), "layernorm.dbias": np32(b.grad)})

    x = torch.randn(3, 5).requires_grad_(True)
    w = torch.randn(4, 5).requires_grad_(True)
    b = torch.randn(4).requires_grad_(True)
    dy = torch.randn(3, 4)
    y = F.linear(x, w, b)
    y.backward(dy)
    T.update({"linear.x": np32(x), "linear.weight": np32(w), "linear.bias": np32(b), "linear.y": np32(y),
              "linear.dy": np32(dy), "linear.dx": np32(x.grad), "linear.dweight": np32(w.grad),
              "linear.dbias": np32(b.grad)})

    logits = (torch.randn(6, 10) * 2).requires_grad_(True)
    targets = torch.randint(0, 10, (6,))
    targets[2] = -100
    loss = F.cross_entropy(logits, targets, ignore_index=-100)
    loss.backward()
    T.update({"cross_entropy.logits": np32(logits), "cross_entropy.targets": targets.numpy().astype(np.int32),
              "cross_entropy.loss": np.array(loss.item(), dtype=np.float32).reshape(()),
              "cross_entropy.dlogits": np32(logits.grad)})

    p0 = torch.randn(32)
    g = torch.randn(32) * 0.1
    T["adamw.p0"], T["adamw.g"] = np32(p0), np32(g)
    for key, wd, steps in (("adamw.p1", 0.1, 1), ("adamw.p5", 0.1, 5), ("adamw.p5_nowd", 0.0, 5)):
        p = p0.clone().requires_grad_(True)
        opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd, foreach=False)
        for _ in range(steps):
            p.grad = g.clone()
            opt.step()
        T[key] = np32(p)

    specials = np.array([1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, 3.4028235e38, 1e-40, -1e-40,
                         1.1754944e-38, 65504.0], dtype=np.float32)
    bits = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x3F807FFF, 0x3F80FFFF, 0x7F7FFFFF,
                     0x7F7F8000, 0x00008000, 0x80018000, 0x3F808001, 0xBF818000, 0x4049FDB0],
                    dtype=np.uint32).view(np.float32)  # ties to even/odd, just below/above ties, overflow to inf
    xb = np.concatenate([specials, bits]).astype(np.float32)
    bf = torch.from_numpy(xb.copy()).to(torch.bfloat16)
    T["bf16.x"] = xb
    T["bf16.bits"] = bf.view(torch.int16).numpy().astype(np.int32) & 0xFFFF
    T["bf16.back"] = bf.to(torch.float32).numpy()

    meta = {"generator": "tools/gen-golden-ops.py", "torch": torch.__version__, "seed": "0",
            "gelu": "tanh", "ln_eps": "1e-05", "ignore_index": "-100",
            "adamw": "lr 1e-2 betas (0.9,0.95) eps 1e-8 wd 0.1 (p5_nowd: 0), fixed grad adamw.g each step",
            "grads": "of sum(out * dy)"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    _gg.write_safetensors(args.out, T, meta)
    back, _ = _gg.read_safetensors(args.out)
    for k, v in T.items():
        assert back[k].shape == v.shape and np.array_equal(back[k], v, equal_nan=True), k
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes, {len(T)} tensors")


if __name__ == "__main__":
    main()
