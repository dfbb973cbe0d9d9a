#!/usr/bin/python3
"""Write test/golden/gpt-autocast-bf16.safetensors: a small GPT (DESIGN.md architecture)
forward and backward in fp32 and under torch.autocast('cpu', dtype=torch.bfloat16), the
reference for Athanor's train.precision = bf16 (test/golden-bf16.test.ts).

Usage: /usr/bin/python3 tools/gen-golden-autocast.py [--out test/golden/gpt-autocast-bf16.safetensors]

Config: V=64 T=16 L=2 H=2 C=32 F=64, untied, learned positions, B=4; torch.manual_seed(1),
GPT-2 init (tools/gpt_ref.py), idx/targets = randint(0, V, (B, T)).
Keys: input.idx, input.targets (I32); param.<name> (F32); for run in fp32, bf16:
  <run>.logits (F32, [B,T,V]; bf16 logits widened), <run>.loss (F32, []), <run>.grad.<name> (F32).
Autocast runs the Linear layers and both attention matmuls in bf16 (outputs rounded to bf16),
softmax, layer_norm and cross_entropy in fp32; gradients land in the fp32 parameters.
"""
import argparse
import importlib.util
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gpt_ref import GPT  # noqa: E402

spec = importlib.util.spec_from_file_location("gen_golden", os.path.join(HERE, "gen-golden.py"))
gen_golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_golden)

CFG = dict(vocab=64, seq=16, n_layer=2, n_head=2, d_model=32, d_ff=64)
B = 4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.normpath(os.path.join(HERE, "..", "test", "golden", "gpt-autocast-bf16.safetensors")))
    args = ap.parse_args()
    torch.manual_seed(1)
    model = GPT(**CFG)
    model.train()
    V, T = CFG["vocab"], CFG["seq"]
    idx = torch.randint(0, V, (B, T), dtype=torch.int32)
    targets = torch.randint(0, V, (B, T), dtype=torch.int32)
    tensors = {"input.idx": idx.numpy(), "input.targets": targets.numpy()}
    for n, p in model.named_parameters():
        tensors[f"param.{n}"] = p.detach().numpy().copy()
    for run in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(run == "bf16")):
            logits, loss = model(idx, targets)
        loss.backward()
        tensors[f"{run}.logits"] = logits.detach().float().numpy().copy()
        tensors[f"{run}.loss"] = np.array(loss.item(), dtype=np.float32).reshape(())
        for n, p in model.named_parameters():
            tensors[f"{run}.grad.{n}"] = p.grad.detach().float().numpy().copy()
    meta = dict(generator="tools/gen-golden-autocast.py", torch=torch.__version__, seed=1, batch=B, **{k: v for k, v in CFG.items()})
    gen_golden.write_safetensors(args.out, tensors, meta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
