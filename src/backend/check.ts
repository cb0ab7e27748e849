/** Argument checks shared by every backend: each failure names the op and the shapes involved. */
import { DTypeError, ShapeError } from '../errors.js';
import { sizeOf, type DType, type Tensor } from './backend.js';

/** Throws unless the tensor is alive. */
export function live(op: string, ...ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) if (t && t.disposed) throw new ShapeError(op, 'a tensor argument was already disposed');
}

/** Throws unless `t` has exactly `shape`. */
export function expectShape(op: string, name: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new ShapeError(op, `${name} must have shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`, [t.shape]);
  }
}

/** Throws unless `t` holds `size` elements. */
export function expectSize(op: string, name: string, t: Tensor, size: number): void {
  if (t.size !== size) throw new ShapeError(op, `${name} must hold ${size} elements, got ${t.size} (shape [${t.shape.join(', ')}])`, [t.shape]);
}

/** Throws unless every tensor has the same number of elements. */
export function sameSize(op: string, ...ts: Tensor[]): void {
  const n = ts[0]!.size;
  if (ts.some((t) => t.size !== n)) throw new ShapeError(op, 'operands must have the same number of elements', ts.map((t) => t.shape));
}

/** Throws unless `t` has one of `dtypes`. */
export function expectDtype(op: string, name: string, t: Tensor, ...dtypes: DType[]): void {
  if (!dtypes.includes(t.dtype)) throw new DTypeError(op, `${name} must be ${dtypes.join(' or ')}, got ${t.dtype}`);
}

/**
 * Throws unless all float operands share one dtype, float32 or float64; returns it. (bfloat16 is
 * refused: ops that take it check their operands with {@link floats}.)
 */
export function sameFloat(op: string, ...ts: (Tensor | null | undefined)[]): 'float32' | 'float64' {
  const present = ts.filter((t): t is Tensor => !!t);
  const d = present[0]!.dtype;
  if (d === 'int32') throw new DTypeError(op, 'expected float operands, got int32');
  if (d === 'bfloat16' || present.some((t) => t.dtype === 'bfloat16')) throw new DTypeError(op, 'bfloat16 operands are not supported by this op (float32 only)');
  if (present.some((t) => t.dtype !== d)) throw new DTypeError(op, `operands must share one float dtype, got ${present.map((t) => t.dtype).join(', ')}`);
  return d;
}

/** Throws unless every present operand is float32 or bfloat16 (the ops that mix them). */
export function floats(op: string, ...ts: (Tensor | null | undefined)[]): void {
  for (const t of ts) if (t && t.dtype !== 'float32' && t.dtype !== 'bfloat16') throw new DTypeError(op, `expected float32 or bfloat16 operands, got ${t.dtype}`);
}

/** Last dimension of a tensor (its row length). */
export function lastDim(t: Tensor): number {
  return t.shape.length ? t.shape[t.shape.length - 1]! : 1;
}

/** Number of rows when the tensor is viewed as [rows, lastDim]. */
export function rowsOf(t: Tensor): number {
  return t.size / Math.max(1, lastDim(t));
}

/** Validates a shape (non-negative integers). */
export function checkShapeValid(op: string, shape: readonly number[]): number {
  if (!shape.every((s) => Number.isInteger(s) && s >= 0)) throw new ShapeError(op, `invalid shape [${shape.join(', ')}]`);
  return sizeOf(shape);
}

/**
 * The shapes of a LayerNorm over the last dimension of x: out like x, weight and bias [C], mean
 * and rstd [R] (`names`: how errors call weight and bias). Returns R and C.
 */
export function layerNormShapes(op: string, out: Tensor, mean: Tensor, rstd: Tensor, x: Tensor, weight: Tensor, bias: Tensor, names: readonly [string, string] = ['weight', 'bias']): { R: number; C: number } {
  sameSize(op, out, x);
  const C = lastDim(x);
  const R = rowsOf(x);
  expectSize(op, names[0], weight, C);
  expectSize(op, names[1], bias, C);
  expectSize(op, 'mean', mean, R);
  expectSize(op, 'rstd', rstd, R);
  return { R, C };
}
