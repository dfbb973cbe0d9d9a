// safetensors: round trips for every dtype, metadata, empty and 0-d tensors, lazy
// reads, rejection of corrupt files, interop with an independent Python reader and
// writer, and the golden file from tools/gen-golden.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipUnless } from './helpers/require-native.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromStorage, tensor } from '../src/core/tensor.js';
import { f32ToBf16, f32ToF16 } from '../src/core/dtype.js';
import {
  decodeSafetensors, encodeSafetensors, readSafetensors, SafetensorsReader, writeSafetensors, writeSafetensorsAsync,
} from '../src/io/safetensors.js';

const dir = mkdtempSync(join(tmpdir(), 'athanor-st-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function header(path: string): { n: number; json: Record<string, unknown> } {
  const b = readFileSync(path);
  const n = Number(b.readBigUInt64LE(0));
  return { n, json: JSON.parse(b.subarray(8, 8 + n).toString('utf8')) };
}

/** A file from a hand-made header and data section (for corrupt-file tests). */
function craft(name: string, hdr: unknown, data: Uint8Array, lenOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(hdr));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(json.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

test('round trip of every dtype, metadata, empty and 0-d tensors', () => {
  const bf = Uint16Array.from([1, -2.5, 3e38, NaN].map(f32ToBf16));
  const hf = Uint16Array.from([1, -2.5, 65504, 1e-7].map(f32ToF16));
  const tensors = {
    'f32': tensor([1.5, -2, 3.25, 4, 5, 6], [2, 3], 'float32'),
    'f64': tensor([Math.PI, -1e300], [2], 'float64'),
    'i32': tensor([-2147483648, 0, 2147483647], [3], 'int32'),
    'bf16': fromStorage(bf, [2, 2], 'bfloat16'),
    'f16': fromStorage(hf, [4], 'float16'),
    'scalar': tensor([42], [], 'float32'),
    'empty': fromStorage(new Float32Array(0), [0, 5], 'float32'),
    'i64': { dtype: 'I64' as const, shape: [3], data: BigInt64Array.from([-5n, 0n, 2147483647n]) },
    'u8': { dtype: 'U8' as const, shape: [2, 2], data: Uint8Array.from([0, 1, 254, 255]) },
    'bool': { dtype: 'BOOL' as const, shape: [2], data: Uint8Array.from([1, 0]) },
    'i8': { dtype: 'I8' as const, shape: [2], data: Int8Array.from([-128, 127]) },
    'i16': { dtype: 'I16' as const, shape: [1], data: Int16Array.from([-300]) },
    'u16': { dtype: 'U16' as const, shape: [1], data: Uint16Array.from([65535]) },
    'u32': { dtype: 'U32' as const, shape: [1], data: Uint32Array.from([7]) },
  };
  const path = join(dir, 'all.safetensors');
  writeSafetensors(path, tensors, { format: 'pt', step: '12' });
  const { n, json } = header(path);
  assert.equal(n % 8, 0, 'header padded to 8 bytes');
  assert.equal(readFileSync(path).subarray(8, 8 + n).toString().trimEnd().length <= n, true);
  assert.deepEqual(json.__metadata__, { format: 'pt', step: '12' });
  // every tensor aligned to its element size within the data section
  for (const [k, v] of Object.entries(json)) {
    if (k === '__metadata__') continue;
    const e = v as { dtype: string; data_offsets: [number, number] };
    const size = { F64: 8, I64: 8, F32: 4, I32: 4, U32: 4 }[e.dtype] ?? 1;
    assert.equal(e.data_offsets[0] % size, 0, `${k} aligned`);
  }
  const { tensors: back, metadata } = readSafetensors(path);
  assert.deepEqual(metadata, { format: 'pt', step: '12' });
  assert.deepEqual([...back.keys()], Object.keys(tensors));
  for (const k of ['f32', 'f64', 'i32', 'bf16', 'f16', 'scalar', 'empty'] as const) {
    const a = tensors[k], b = back.get(k)!;
    assert.equal(b.dtype, a.dtype, k);
    assert.deepEqual(b.shape, a.shape, k);
    assert.deepEqual(b.toArray(), a.toArray(), k);
    assert.equal(b.name, k);
  }
  assert.deepEqual(back.get('scalar')!.shape, []);
  assert.equal(back.get('scalar')!.item(), 42);
  assert.equal(back.get('i64')!.dtype, 'int32');
  assert.deepEqual(back.get('i64')!.toArray(), [-5, 0, 2147483647]);
  assert.deepEqual(back.get('u8')!.toArray(), [0, 1, 254, 255]);
  assert.deepEqual(back.get('i8')!.toArray(), [-128, 127]);
  assert.deepEqual(back.get('i16')!.toArray(), [-300]);
  assert.deepEqual(back.get('u16')!.toArray(), [65535]);
  assert.deepEqual(back.get('bool')!.toArray(), [1, 0]);
  const r = SafetensorsReader.open(path);
  try {
    const raw = r.readRaw('i64');
    assert.ok(raw.data instanceof BigInt64Array);
    assert.deepEqual([...raw.data], [-5n, 0n, 2147483647n]);
    assert.equal(r.entry('bf16').dtype, 'BF16');
  } finally {
    r.close();
  }
  // encode/decode in memory gives the same bytes as the file
  const bytes = Buffer.concat(encodeSafetensors(tensors, { format: 'pt', step: '12' }));
  assert.deepEqual(bytes, readFileSync(path));
  assert.deepEqual(decodeSafetensors(bytes).tensors.get('f64')!.toArray(), [Math.PI, -1e300]);
});

test('non-contiguous tensors are written row-major; async writer; no metadata', async () => {
  const base = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const tr = base.view([3, 2], [1, 3], 0); // transpose
  const path = join(dir, 'nc.safetensors');
  await writeSafetensorsAsync(path, new Map([['t', tr]]));
  const { tensors, metadata } = readSafetensors(path);
  assert.deepEqual(tensors.get('t')!.toArray(), [1, 4, 2, 5, 3, 6]);
  assert.deepEqual(metadata, {});
  assert.equal('__metadata__' in header(path).json, false);
});

test('lazy reads: only requested tensors are read; out-of-range I64 is refused by name', () => {
  const big = new Float32Array(1 << 20).fill(7);
  const path = join(dir, 'lazy.safetensors');
  writeSafetensors(path, {
    big: fromStorage(big, [1024, 1024], 'float32'),
    small: tensor([1, 2, 3]),
    huge: { dtype: 'I64', shape: [2], data: BigInt64Array.from([1n, 1n << 40n]) },
  });
  const r = SafetensorsReader.open(path);
  try {
    assert.deepEqual(r.names(), ['big', 'small', 'huge']);
    assert.deepEqual(r.read('small').toArray(), [1, 2, 3]);
    assert.throws(() => r.read('huge'), new RegExp(`${path}: tensor 'huge': I64 value 1099511627776 at element 1 does not fit int32`));
    assert.throws(() => r.read('nope'), /no tensor 'nope'/);
  } finally {
    r.close();
  }
  const only = readSafetensors(path, ['small']);
  assert.deepEqual([...only.tensors.keys()], ['small']);
});

test('corrupt files are rejected with messages naming the file and tensor', () => {
  const data = new Uint8Array(16);
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } };
  const good = craft('good.safetensors', ok, data);
  assert.equal(readSafetensors(good).tensors.size, 2);
  const cases: [string, () => string, RegExp][] = [
    ['tiny', () => { const p = join(dir, 'tiny.safetensors'); writeFileSync(p, Buffer.alloc(5)); return p; }, /too short for the 8-byte header length/],
    ['truncated', () => { const p = join(dir, 'trunc.safetensors'); writeFileSync(p, readFileSync(good).subarray(0, statSync(good).size - 4)); return p; }, /tensor 'b': data_offsets \[8, 16\] run past the data section \(12 bytes; file truncated\?\)/],
    ['header past end', () => craft('hpe.safetensors', ok, data, 100000n), /header length 100000 runs past the end of the \d+-byte file/],
    ['header too big', () => craft('htb.safetensors', ok, data, 1n << 40n), /exceeds the 100000000-byte limit/],
    ['bad json', () => { const p = craft('bj.safetensors', ok, data); const b = readFileSync(p); b[9] = 0x21; writeFileSync(p, b); return p; }, /header is not valid UTF-8 JSON/],
    ['not an object', () => craft('arr.safetensors', [1, 2], new Uint8Array(0)), /header is not a JSON object/],
    ['bad dtype', () => craft('bd.safetensors', { ...ok, b: { ...ok.b, dtype: 'F31' } }, data), /tensor 'b': unknown dtype "F31"/],
    ['bad shape', () => craft('bs.safetensors', { ...ok, b: { ...ok.b, shape: [-2] } }, data), /tensor 'b': shape \[-2\] is not a list/],
    ['size mismatch', () => craft('sm.safetensors', { ...ok, b: { ...ok.b, shape: [3] } }, data), /tensor 'b': data_offsets \[8, 16\] hold 8 bytes but shape \[3\] of F32 needs 12/],
    ['overlap', () => craft('ov.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] }, c: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, data), /tensor 'b' data_offsets \[4, 12\] overlap tensor 'a' \[0, 8\]/],
    ['gap', () => craft('gap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, data), /tensor 'b' starts at 12, leaving a gap after byte 8/],
    ['trailing bytes', () => craft('tb.safetensors', { a: ok.a }, data), /tensors cover 8 bytes but the data section has 16/],
    ['reversed offsets', () => craft('ro.safetensors', { a: { dtype: 'U8', shape: [0], data_offsets: [9, 1] } }, data), /tensor 'a': data_offsets \[9,1\] is not \[begin, end\]/],
    ['bad metadata', () => craft('bm.safetensors', { ...ok, __metadata__: { step: 3 } }, data), /'__metadata__' value 'step' is not a string/],
  ];
  for (const [label, make, re] of cases) {
    const p = make();
    assert.throws(() => readSafetensors(p), (e: Error) => {
      assert.match(e.message, re, label);
      assert.ok(e.message.startsWith(p + ':'), `${label}: message names the file: ${e.message}`);
      return true;
    }, label);
  }
  assert.throws(() => writeSafetensors(join(dir, 'x.safetensors'), { __metadata__: tensor([1]) }), /reserved/);
  assert.throws(() => writeSafetensors(join(dir, 'y.safetensors'), { r: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), /tensor 'r': 8 bytes of data, shape \[3\] of F32 needs 12/);
});

const PY = '/usr/bin/python3';
const pyOk = existsSync(PY) && spawnSync(PY, ['-c', 'import numpy, torch'], { stdio: 'ignore' }).status === 0;

// An independent reader/writer of the format in Python (numpy + torch for bf16).
const PY_LIB = String.raw`
import json, struct, sys
import numpy as np
import torch
NP = {"F32": "<f4", "F64": "<f8", "I32": "<i4", "I64": "<i8", "F16": "<f2", "U8": "u1", "BF16": "<u2"}
def read(path):
    b = open(path, "rb").read()
    (n,) = struct.unpack("<Q", b[:8])
    assert n % 8 == 0, "header not padded"
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    out = {}
    for k, e in h.items():
        s, t = e["data_offsets"]
        a = np.frombuffer(b[8 + n + s:8 + n + t], dtype=NP[e["dtype"]]).reshape(e["shape"])
        if e["dtype"] == "BF16":
            a = torch.from_numpy(a.astype(np.int16)).view(torch.bfloat16).float().numpy()
        out[k] = a
    return out, meta
def write(path, tensors, meta):
    h, blobs, off = {"__metadata__": meta}, [], 0
    for k, (dt, a) in tensors.items():
        raw = a.tobytes()
        h[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw); off += len(raw)
    j = json.dumps(h).encode()
    j += b" " * ((8 - len(j) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(j))); f.write(j)
        for r in blobs: f.write(r)
`;

test('a file written by Athanor reads correctly in an independent Python reader', { skip: skipUnless(pyOk, '/usr/bin/python3 with numpy and torch (Debian: python3-torch)', 'torch') }, () => {
  const path = join(dir, 'to-py.safetensors');
  writeSafetensors(path, {
    w: tensor([0.5, -1.25, 3, 1e-8, 7, 8], [3, 2], 'float32'),
    d: tensor([Math.E], [], 'float64'),
    ids: tensor([3, -4], [2], 'int32'),
    h: fromStorage(Uint16Array.from([1.5, -2].map(f32ToF16)), [2], 'float16'),
    b: fromStorage(Uint16Array.from([0.15625, 100].map(f32ToBf16)), [2], 'bfloat16'),
    e: fromStorage(new Float32Array(0), [2, 0], 'float32'),
    l: { dtype: 'I64', shape: [1], data: BigInt64Array.from([-(1n << 40n)]) },
  }, { note: 'hi' });
  const out = execFileSync(PY, ['-c', PY_LIB + String.raw`
t, meta = read(sys.argv[1])
print(json.dumps({"meta": meta, "t": {k: {"shape": list(v.shape), "dtype": str(v.dtype), "v": v.reshape(-1).tolist()} for k, v in t.items()}}))
`, path], { encoding: 'utf8' });
  const r = JSON.parse(out) as { meta: unknown; t: Record<string, { shape: number[]; v: number[] }> };
  assert.deepEqual(r.meta, { note: 'hi' });
  assert.deepEqual(r.t.w!.shape, [3, 2]);
  assert.deepEqual(r.t.w!.v, [0.5, -1.25, 3, Math.fround(1e-8), 7, 8]);
  assert.deepEqual(r.t.d, { shape: [], dtype: 'float64', v: [Math.E] });
  assert.deepEqual(r.t.ids!.v, [3, -4]);
  assert.deepEqual(r.t.h!.v, [1.5, -2]);
  assert.deepEqual(r.t.b!.v, [0.15625, 100]);
  assert.deepEqual(r.t.e!.shape, [2, 0]);
  assert.deepEqual(r.t.l!.v, [-(2 ** 40)]);
});

test('a file written by Python reads correctly in Athanor', { skip: skipUnless(pyOk, '/usr/bin/python3 with numpy and torch (Debian: python3-torch)', 'torch') }, () => {
  const path = join(dir, 'from-py.safetensors');
  execFileSync(PY, ['-c', PY_LIB + String.raw`
bf = torch.tensor([1.0, -3.5, 0.1]).to(torch.bfloat16).view(torch.int16).numpy().astype("<u2")
write(sys.argv[1], {
  "x": ("F32", np.arange(12, dtype="<f4").reshape(3, 4) / 8),
  "y": ("F64", np.array(-0.1, dtype="<f8")),
  "z": ("I64", np.array([[1, -2], [3, 2**31 - 1]], dtype="<i8")),
  "h": ("F16", np.array([0.5, 65504], dtype="<f2")),
  "b": ("BF16", bf),
  "u": ("U8", np.array([9, 200], dtype="u1")),
}, {"by": "python"})
`, path]);
  const { tensors, metadata } = readSafetensors(path);
  assert.deepEqual(metadata, { by: 'python' });
  assert.deepEqual(tensors.get('x')!.shape, [3, 4]);
  assert.deepEqual(tensors.get('x')!.toArray(), Array.from({ length: 12 }, (_, i) => i / 8));
  assert.deepEqual(tensors.get('y')!.shape, []);
  assert.equal(tensors.get('y')!.item(), -0.1);
  assert.equal(tensors.get('z')!.dtype, 'int32');
  assert.deepEqual(tensors.get('z')!.toArray(), [1, -2, 3, 2 ** 31 - 1]);
  assert.deepEqual(tensors.get('h')!.toArray(), [0.5, 65504].map(f32ToF16));
  assert.equal(tensors.get('b')!.dtype, 'bfloat16');
  assert.deepEqual(tensors.get('b')!.toArray(), [1.0, -3.5, 0.1].map(f32ToBf16));
  assert.deepEqual(tensors.get('u')!.toArray(), [9, 200]);
});

const GOLDEN = new URL('../../test/golden/tiny-gpt.safetensors', import.meta.url);
test('reads the PyTorch golden file tools/gen-golden.py writes', { skip: !existsSync(GOLDEN) && 'test/golden/tiny-gpt.safetensors not generated' }, () => {
  const r = SafetensorsReader.open(GOLDEN.pathname);
  try {
    assert.deepEqual(r.read('input.idx').shape, [2, 8]);
    assert.equal(r.read('input.idx').dtype, 'int32');
    const wte = r.read('param.wte.weight');
    assert.deepEqual(wte.shape, [64, 16]);
    assert.equal(wte.dtype, 'float32');
    assert.deepEqual(r.read('param.h.1.attn.c_attn.weight').shape, [48, 16]);
    assert.deepEqual(r.read('out.loss').shape, []);
    assert.ok(Number.isFinite(r.read('out.loss').item()));
    assert.deepEqual(r.read('out.logits').shape, [2, 8, 64]);
    assert.deepEqual(r.read('adamw.losses').shape, [10]);
  } finally {
    r.close();
  }
});
