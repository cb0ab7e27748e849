/** CPU tensors: typed-array views into the backend's shared WebAssembly memory. */
import { ShapeError } from '../../errors.js';
import type { DType, Tensor } from '../backend.js';

/** The typed array of each dtype. */
export type CpuArray = Float32Array | Float64Array | Int32Array;
/** A float array. */
export type FArray = Float32Array | Float64Array;

/** Releases the memory of an owning tensor (provided by the backend). */
export type Releaser = (byteOffset: number) => void;

/** A tensor whose elements live at `byteOffset` in the CPU backend's linear memory. */
export class CpuTensor implements Tensor {
  readonly size: number;
  private _disposed = false;
  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** Element view over the tensor's bytes (valid for the tensor's life). */
    readonly data: CpuArray,
    /** Byte offset in the linear memory (what kernels receive). */
    readonly byteOffset: number,
    private readonly release: Releaser | null,
    private readonly parent: CpuTensor | null = null,
  ) {
    this.size = data.length;
  }
  get isView(): boolean {
    return this.release === null;
  }
  get disposed(): boolean {
    return this._disposed || (this.parent !== null && this.parent.disposed);
  }
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    if (this.release) this.release(this.byteOffset);
  }
}

/** Narrows a Tensor to a live CpuTensor (the CPU backend only accepts its own tensors). */
export function cpu(op: string, t: Tensor): CpuTensor {
  if (!(t instanceof CpuTensor)) throw new ShapeError(op, 'tensor belongs to another backend');
  if (t.disposed) throw new ShapeError(op, `tensor [${t.shape.join(', ')}] was already disposed`);
  return t;
}
