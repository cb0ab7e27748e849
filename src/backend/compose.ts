/**
 * Ops a backend may compose from its others: the CPU backend always, the CUDA backend where its
 * fused kernels do not apply. One composition, so that both give the same numbers the same way.
 */
import { ShapeError } from '../errors.js';
import type { Backend, Tensor } from './backend.js';
import { expectDtype, expectSize, lastDim, rowsOf, sameSize } from './check.js';

/** The shapes of {@link Backend.tiedCrossEntropy}: x [R, K] against table [V, K]; throws naming the op. */
export function tiedShapes(op: string, loss: Tensor, dlogits: Tensor | null, x: Tensor, table: Tensor, targets: Tensor, weights: Tensor | null): { R: number; V: number; K: number } {
  if (table.shape.length !== 2) throw new ShapeError(op, 'table must be a matrix [V, K]', [table.shape]);
  const [V, K] = table.shape as [number, number];
  if (lastDim(x) !== K) throw new ShapeError(op, `x rows must have ${K} elements like the table's`, [x.shape, table.shape]);
  const R = rowsOf(x);
  expectDtype(op, 'targets', targets, 'int32');
  expectSize(op, 'loss', loss, R);
  expectSize(op, 'targets', targets, R);
  if (weights) expectSize(op, 'weights', weights, R);
  if (dlogits) expectSize(op, 'dlogits', dlogits, R * V);
  return { R, V, K };
}

/**
 * Backend.tiedCrossEntropy as its two parts: the logits [R, V] = x table^T (float32, `matmul`'s
 * product of these operands) in a temporary, then `crossEntropy` of them.
 */
export function tiedCrossEntropyComposed(be: Backend, loss: Tensor, dlogits: Tensor | null, x: Tensor, table: Tensor, targets: Tensor, weights: Tensor | null): void {
  const { R, V } = tiedShapes('tiedCrossEntropy', loss, dlogits, x, table, targets, weights);
  if (!R) return;
  const logits = be.empty([R, V], loss.dtype);
  try {
    be.matmul(logits, x, table, { transB: true });
    const dl = dlogits ? be.view(dlogits, 0, [R, V]) : null;
    try {
      if (dl) sameSize('tiedCrossEntropy', dl, logits);
      be.crossEntropy(loss, dl, logits, targets, weights);
    } finally {
      dl?.dispose();
    }
  } finally {
    logits.dispose();
  }
}
