/**
 * Ops a backend may compose from its others: the CPU backend always, the CUDA backend where its
 * fused kernels do not apply. One composition, so that both give the same numbers the same way.
 */
import { ShapeError } from '../errors.js';
import type { Backend, ExpertGroups, GroupedMatmulOptions, MoeRouting, Tensor } from './backend.js';
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

/**
 * groupedMatmul's gathered rows and its GELU without a kept pre-activation through its plain form
 * (`plain`: rows already in expert order): the rows permuted into a temporary (moePermute), and
 * unless `plainDropsPre` (the plain form leaves out a `pre: null` itself) the pre-activation written
 * into another. For backends, or paths, that do not do these in the product itself.
 */
export function groupedMatmulComposed(
  be: Backend,
  plain: (out: Tensor, xs: Tensor, weight: Tensor, bias: Tensor | null, groups: ExpertGroups, gelu: { pre: Tensor | null } | undefined) => void,
  out: Tensor,
  xs: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  groups: ExpertGroups,
  opts: GroupedMatmulOptions,
  plainDropsPre = false,
): void {
  const temps: Tensor[] = [];
  try {
    let rows = xs;
    if (opts.gather) {
      const routing = gatherRouting('groupedMatmul', groups);
      const K = lastDim(xs);
      expectSize('groupedMatmul', 'xs', xs, routing.tokens * K);
      rows = be.empty([routing.order.size, K], xs.dtype);
      temps.push(rows);
      be.moePermute(rows, xs, routing);
    }
    let gelu = opts.gelu;
    if (gelu && !gelu.pre && !plainDropsPre) {
      const pre = be.empty([...out.shape], out.dtype);
      temps.push(pre);
      gelu = { pre };
    }
    plain(out, rows, weight, bias, groups, gelu);
  } finally {
    for (const t of temps) t.dispose();
  }
}

/** The routing of a gathered grouped product (GroupedMatmulOptions.gather): counts cannot say where rows come from. */
function gatherRouting(op: string, groups: ExpertGroups): MoeRouting {
  if (Array.isArray(groups)) throw new ShapeError(op, 'gather needs a routing (its order), not expert counts', []);
  return groups as MoeRouting;
}
