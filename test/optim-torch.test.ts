// Athanor's optimizers against torch.optim itself (Debian python3-torch), when present:
// the same initial parameters and per-step gradients go through both, via safetensors.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromStorage, type Tensor } from '../src/core/tensor.js';
import { Rng } from '../src/core/rng.js';
import { setNativeMinElements } from '../src/backend/dispatch.js';
import { readSafetensors, writeSafetensors, type WritableTensor } from '../src/io/safetensors.js';
import { AdamW, SGD, Adagrad, type Optimizer, type BaseHyper } from '../src/optim/index.js';

const PY = '/usr/bin/python3';
const pyOk = existsSync(PY) && spawnSync(PY, ['-c', 'import numpy, torch'], { stdio: 'ignore' }).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'athanor-optim-torch-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const PY_RUN = String.raw`
import json, struct, sys
import numpy as np
import torch
def read(path):
    b = open(path, "rb").read()
    (n,) = struct.unpack("<Q", b[:8]); h = json.loads(b[8:8 + n]); meta = h.pop("__metadata__", {})
    return {k: np.frombuffer(b[8+n+e["data_offsets"][0]:8+n+e["data_offsets"][1]], dtype="<f4").reshape(e["shape"]).copy() for k, e in h.items()}, meta
def write(path, t):
    h, blobs, off = {}, [], 0
    for k, a in t.items():
        raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
        h[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}; blobs.append(raw); off += len(raw)
    j = json.dumps(h).encode(); j += b" " * ((8 - len(j) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(j))); f.write(j); [f.write(r) for r in blobs]
t, meta = read(sys.argv[1])
cfg = json.loads(meta["cfg"]); steps = int(meta["steps"]); names = json.loads(meta["names"])
ps = [torch.nn.Parameter(torch.from_numpy(t["init." + n])) for n in names]
groups = [{"params": [p], "weight_decay": cfg["wd"][i]} for i, p in enumerate(ps)]
kind = cfg["kind"]
if kind == "adamw":
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], foreach=False)
elif kind == "sgd":
    opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"], dampening=cfg["dampening"], nesterov=cfg["nesterov"], foreach=False)
else:
    opt = torch.optim.Adagrad(groups, lr=cfg["lr"], lr_decay=cfg["lr_decay"], initial_accumulator_value=cfg["init_acc"], eps=cfg["eps"], foreach=False)
for s in range(steps):
    for i, (n, p) in enumerate(zip(names, ps)):
        p.grad = torch.from_numpy(t[f"grad{s}.{n}"])
    opt.step()
write(sys.argv[2], {n: p.detach().numpy() for n, p in zip(names, ps)})
`;

const STEPS = 6;

function runBoth(kind: string, cfg: Record<string, unknown>, make: (ps: Tensor[]) => Optimizer<BaseHyper>, label: string): void {
  const rng = new Rng(31);
  const shapes: Record<string, number[]> = { w: [33, 17], b: [17], e: [1000] };
  const names = Object.keys(shapes);
  const file: Record<string, WritableTensor> = {};
  const ps = names.map((n) => {
    const d = new Float32Array(shapes[n]!.reduce((a, b) => a * b, 1));
    rng.fillNormal(d);
    const t = fromStorage(d, shapes[n]!, 'float32').keep();
    t.name = n;
    t.requiresGrad = true;
    file[`init.${n}`] = fromStorage(d.slice(), shapes[n]!, 'float32');
    return t;
  });
  const grads: Float32Array[][] = [];
  for (let s = 0; s < STEPS; s++) {
    grads.push(ps.map((p) => {
      const g = new Float32Array(p.size);
      rng.fillNormal(g, 0, 0.5 + s);
      file[`grad${s}.${p.name}`] = fromStorage(g, p.shape, 'float32');
      return g;
    }));
  }
  const inPath = join(dir, `${label}-in.safetensors`), outPath = join(dir, `${label}-out.safetensors`);
  writeSafetensors(inPath, file, { cfg: JSON.stringify({ kind, ...cfg }), steps: String(STEPS), names: JSON.stringify(names) });
  execFileSync(PY, ['-c', PY_RUN, inPath, outPath], { stdio: ['ignore', 'ignore', 'inherit'] });
  const opt = make(ps);
  for (let s = 0; s < STEPS; s++) {
    ps.forEach((p, i) => { p.grad = fromStorage(grads[s]![i]!.slice(), p.shape, 'float32').keep(); });
    opt.step();
  }
  const torchOut = readSafetensors(outPath).tensors;
  for (const p of ps) {
    const a = p.data as Float32Array, e = torchOut.get(p.name!)!.data as Float32Array;
    // float32 rounding differs by an ulp here and there; values near 0 need an absolute floor
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - e[i]!) / (1e-3 + Math.abs(e[i]!)));
    assert.ok(worst < 2e-5, `${label} ${p.name}: max difference to torch ${worst} (relative, floor 1e-3)`);
  }
}

for (const [label, minNative] of [['native', 0], ['reference', Infinity]] as const) {
  test(`AdamW/SGD/Adagrad (${label}) match torch.optim on 6 steps`, { skip: skipUnless(pyOk, '/usr/bin/python3 with numpy and torch (Debian: python3-torch)', 'torch') }, () => {
    setNativeMinElements(minNative);
    try {
      const wd = [0.1, 0, 0.05];
      const groups = (ps: Tensor[]) => ps.map((p, i) => ({ params: [p], weightDecay: wd[i]! }));
      runBoth('adamw', { lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, wd },
        (ps) => new AdamW(groups(ps), { lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8 }) as unknown as Optimizer<BaseHyper>, `adamw-${label}`);
      runBoth('sgd', { lr: 0.01, momentum: 0.9, dampening: 0, nesterov: true, wd },
        (ps) => new SGD(groups(ps), { lr: 0.01, momentum: 0.9, nesterov: true }) as unknown as Optimizer<BaseHyper>, `sgd-nesterov-${label}`);
      runBoth('sgd', { lr: 0.01, momentum: 0.5, dampening: 0.25, nesterov: false, wd },
        (ps) => new SGD(groups(ps), { lr: 0.01, momentum: 0.5, dampening: 0.25 }) as unknown as Optimizer<BaseHyper>, `sgd-damp-${label}`);
      runBoth('adagrad', { lr: 0.05, lr_decay: 0.01, init_acc: 0.1, eps: 1e-10, wd },
        (ps) => new Adagrad(groups(ps), { lr: 0.05, lrDecay: 0.01, initialAccumulatorValue: 0.1 }) as unknown as Optimizer<BaseHyper>, `adagrad-${label}`);
    } finally {
      setNativeMinElements(64);
    }
  });
}
