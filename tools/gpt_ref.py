"""PyTorch GPT matching DESIGN.md's "GPT reference architecture" exactly.

Shared by tools/gen-golden.py, tools/train-ref.py and bench/peers/torch-gpt.py.
(Python module names cannot contain '-', hence the underscore.)

  x = wte[idx] + wpe[arange(T)]
  L pre-LN blocks: x += attn(ln_1(x)); x += mlp(ln_2(x))    LayerNorm eps 1e-5
  attn: qkv = x c_attn.weight^T + b, c_attn.weight (3C, C); q|k|v = columns [0,C)|[C,2C)|[2C,3C);
        head h uses [h*D, (h+1)*D); causal softmax(q k^T / sqrt(D)) v; concat; c_proj (C, C) + b
  mlp: c_fc (F, C) + b, GELU tanh, c_proj (C, F) + b
  ln_f; lm_head.weight (V, C), no bias (untied unless tie=True)
  loss: mean cross-entropy over targets != -100
"""
import ctypes
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def set_threads(n):
    """Debian's torch sends float32 matmul to OpenBLAS, whose thread pool is separate from
    torch's intra-op pool, so both have to be set for a fair thread count."""
    torch.set_num_threads(n)
    for lib in ("libopenblas.so.0", "libopenblasp.so.0", "libopenblas.so"):
        try:
            ctypes.CDLL(lib).openblas_set_num_threads(n)
            return lib
        except (OSError, AttributeError):
            continue
    return None


class Attention(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        assert C % H == 0, f"d_model {C} not divisible by n_head {H}"
        self.C, self.H = C, H
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)

    def forward(self, x):
        B, T, C = x.shape
        H, D = self.H, C // self.H
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, C, Fh):
        super().__init__()
        self.c_fc = nn.Linear(C, Fh)
        self.c_proj = nn.Linear(Fh, C)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, C, H, Fh):
        super().__init__()
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.attn = Attention(C, H)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.mlp = MLP(C, Fh)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, vocab, seq, n_layer, n_head, d_model, d_ff, tie=False):
        super().__init__()
        self.cfg = dict(vocab=vocab, seq=seq, n_layer=n_layer, n_head=n_head, d_model=d_model, d_ff=d_ff, tie=tie)
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(seq, d_model)
        self.h = nn.ModuleList([Block(d_model, n_head, d_ff) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model, eps=1e-5)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight
        self.gpt2_init()

    @torch.no_grad()
    def gpt2_init(self):
        """Weights N(0, 0.02), *.c_proj.weight N(0, 0.02/sqrt(2L)), biases 0, LayerNorm 1/0.
        Parameters are visited in named_parameters() order, so a seed fixes the values."""
        L = self.cfg["n_layer"]
        for name, p in self.named_parameters():
            if ".ln_" in name or name.startswith("ln_f"):
                (p.fill_(1.0) if name.endswith(".weight") else p.zero_())
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith("c_proj.weight"):
                p.normal_(0.0, 0.02 / math.sqrt(2 * L))
            else:
                p.normal_(0.0, 0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.cfg["seq"], f"sequence length {T} > block size {self.cfg['seq']}"
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx.long()) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=-100)
        return logits, loss


def param_groups(model, weight_decay):
    """Decay only parameters with >= 2 dims (matrices, embeddings), as DESIGN.md says."""
    decay = [p for _, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def count_params(model):
    return sum(p.numel() for p in model.parameters())
