// Tensor = typed-array storage + explicit layout (shape, strides, offset).
// Storage is shared between views through a reference-counted box, so a view keeps
// its base alive and the last disposal returns the buffer to the pool.
import { allocStorage, type DType, type Storage } from './dtype.js';
import { pool } from './buffer-pool.js';
import { checkShape, contiguousStrides, isContiguous, numel, shapeStr, type Shape } from './layout.js';
import { trackTensor } from './scope.js';
import type { Node } from '../autograd/node.js';

export interface StorageBox {
  data: Storage | null;
  refs: number;
  pooled: boolean;
  /** Shape-only tensor (the "meta" device): no storage is ever allocated. */
  meta?: boolean;
}

let nextTensorId = 1;

export class Tensor {
  readonly id = nextTensorId++;
  requiresGrad = false;
  /** Accumulated gradient (contiguous, same shape and dtype), or null. */
  grad: Tensor | null = null;
  /** The tape node that produced this tensor; null for leaves. */
  node: Node | null = null;
  name?: string;
  /** Excluded from scope disposal (parameters, optimizer state, results kept by the caller). */
  kept = false;
  private disposed = false;

  constructor(
    readonly box: StorageBox,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly offset: number,
    readonly dtype: DType,
  ) {
    box.refs++;
    trackTensor(this);
  }

  get data(): Storage {
    const d = this.box.data;
    if (this.box.meta) throw new Error(`tensor ${this.name ?? '#' + this.id} ${shapeStr(this.shape)} is on the meta device (shape only) and has no data`);
    if (d === null || this.disposed) {
      throw new Error(`tensor ${this.name ?? '#' + this.id} ${shapeStr(this.shape)} was used after it was disposed (it was created inside a scope that has ended; keep() it or return it from the scope)`);
    }
    return d;
  }

  get size(): number {
    return numel(this.shape);
  }

  get ndim(): number {
    return this.shape.length;
  }

  get isLeaf(): boolean {
    return this.node === null;
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  isContiguous(): boolean {
    return isContiguous(this.shape, this.strides);
  }

  /** A new tensor sharing this storage with another layout. No autograd: see ops/shape for that. */
  view(shape: readonly number[], strides: readonly number[], offset: number): Tensor {
    return new Tensor(this.box, [...shape], [...strides], offset, this.dtype);
  }

  keep(): this {
    this.kept = true;
    return this;
  }

  /** Releases this tensor's claim on its storage. Safe to call twice. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.node = null;
    const b = this.box;
    if (--b.refs === 0 && b.data !== null) {
      if (b.pooled) pool.release(this.dtype, b.data);
      b.data = null;
    }
  }

  /** Scalar value of a one-element tensor. */
  item(): number {
    if (this.size !== 1) throw new Error(`item(): tensor has ${this.size} elements, expected 1`);
    return this.data[this.offset]!;
  }

  /** Row-major copy of the elements as plain numbers (bf16/f16 decoded are NOT decoded: raw bits). */
  toArray(): number[] {
    const out: number[] = new Array(this.size);
    const d = this.data;
    forEachIndex(this.shape, this.strides, this.offset, (src, i) => { out[i] = d[src]!; });
    return out;
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${shapeStr(this.shape)}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/** Calls fn(storageIndex, logicalIndex) for every element in row-major order. */
export function forEachIndex(shape: Shape, strides: readonly number[], offset: number, fn: (src: number, i: number) => void): void {
  const n = numel(shape);
  if (n === 0) return;
  const nd = shape.length;
  if (nd === 0) { fn(offset, 0); return; }
  const idx = new Array<number>(nd).fill(0);
  let src = offset;
  for (let i = 0; i < n; i++) {
    fn(src, i);
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      src += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      src -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
}

/** Uninitialised contiguous tensor from the buffer pool. */
export function empty(shape: Shape, dtype: DType = 'float32'): Tensor {
  checkShape(shape, 'empty');
  const data = pool.acquire(dtype, numel(shape));
  return new Tensor({ data, refs: 0, pooled: true }, [...shape], contiguousStrides(shape), 0, dtype);
}

export function zeros(shape: Shape, dtype: DType = 'float32'): Tensor {
  const t = empty(shape, dtype);
  t.data.fill(0);
  return t;
}

export function full(shape: Shape, value: number, dtype: DType = 'float32'): Tensor {
  const t = empty(shape, dtype);
  t.data.fill(value);
  return t;
}

export function ones(shape: Shape, dtype: DType = 'float32'): Tensor {
  return full(shape, 1, dtype);
}

/** Wraps (does not copy) a typed array as a contiguous tensor; `data.length` must equal the element count. */
export function fromStorage(data: Storage, shape: Shape, dtype: DType): Tensor {
  checkShape(shape, 'fromStorage');
  if (data.length !== numel(shape)) {
    throw new Error(`fromStorage: ${data.length} elements do not fill shape ${shapeStr(shape)} (${numel(shape)})`);
  }
  return new Tensor({ data, refs: 0, pooled: false }, [...shape], contiguousStrides(shape), 0, dtype);
}

/** Copies numbers into a new tensor. */
export function tensor(values: ArrayLike<number>, shape?: Shape, dtype: DType = 'float32'): Tensor {
  const sh = shape ?? [values.length];
  const data = allocStorage(dtype, numel(sh));
  if (data.length !== values.length) {
    throw new Error(`tensor: ${values.length} values do not fill shape ${shapeStr(sh)}`);
  }
  for (let i = 0; i < data.length; i++) data[i] = values[i]!;
  return fromStorage(data, sh, dtype);
}

export function scalar(value: number, dtype: DType = 'float32'): Tensor {
  return tensor([value], [], dtype);
}

/** A shape-only tensor: counts parameters and plans memory without allocating. */
export function metaTensor(shape: Shape, dtype: DType = 'float32'): Tensor {
  checkShape(shape, 'metaTensor');
  return new Tensor({ data: null, refs: 0, pooled: false, meta: true }, [...shape], contiguousStrides(shape), 0, dtype);
}

export function arange(n: number, dtype: DType = 'int32'): Tensor {
  const t = empty([n], dtype);
  const d = t.data;
  for (let i = 0; i < n; i++) d[i] = i;
  return t;
}
