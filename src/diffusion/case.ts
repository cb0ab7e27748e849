/**
 * The check-loss case format: a loss evaluation with all of its randomness given, so that another
 * implementation of SPEC.md can be compared number for number.
 * {"inputIds": int[B][N], "inputMask": int[B][N], "t": int[B], "eps0": float[B][N][e],
 *  "eps": float[B][N][e], "replaceMask": int[B][N], "weights": float[B] (optional, default 1)}
 */
import { InputError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { LossBatch, LossNoise } from './loss.js';

/** Parses and validates a case against a config; errors name the file and the field. */
export function parseLossCase(raw: unknown, file: string, cfg: ModelConfig): { batch: LossBatch; noise: LossNoise } {
  const fail = (msg: string): never => {
    throw new InputError(file, undefined, msg);
  };
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('expected a JSON object');
  const o = raw as Record<string, unknown>;
  const known = ['inputIds', 'inputMask', 't', 'eps0', 'eps', 'replaceMask', 'weights'];
  for (const k of Object.keys(o)) if (!known.includes(k)) fail(`unknown field '${k}' (fields: ${known.join(', ')})`);
  const matrix = (name: string, int: boolean): number[][] => {
    const v = o[name];
    if (!Array.isArray(v) || v.length === 0) fail(`'${name}' must be a non-empty array of rows`);
    return (v as unknown[]).map((row, b) => {
      if (!Array.isArray(row)) fail(`'${name}[${b}]' must be an array`);
      return (row as unknown[]).map((x, n) => {
        if (typeof x !== 'number' || !Number.isFinite(x) || (int && !Number.isInteger(x))) fail(`'${name}[${b}][${n}]' must be ${int ? 'an integer' : 'a finite number'}, got ${JSON.stringify(x)}`);
        return x as number;
      });
    });
  };
  const ids = matrix('inputIds', true);
  const B = ids.length;
  const N = ids[0]!.length;
  if (ids.some((r) => r.length !== N)) fail(`'inputIds' rows must all have ${N} ids`);
  const shapeBN = (name: string, m: number[][]) => {
    if (m.length !== B || m.some((r) => r.length !== N)) fail(`'${name}' must be [${B}][${N}] like inputIds`);
  };
  const mask = matrix('inputMask', true);
  shapeBN('inputMask', mask);
  const rep = matrix('replaceMask', true);
  shapeBN('replaceMask', rep);
  for (const [name, m] of [['inputMask', mask], ['replaceMask', rep]] as const) if (m.flat().some((x) => x !== 0 && x !== 1)) fail(`'${name}' values must be 0 or 1`);
  ids.forEach((row, b) => row.forEach((id, n) => {
    if (id < 0 || id >= cfg.vocabSize) fail(`'inputIds[${b}][${n}]': token id ${id} is outside the model's vocabulary [0, ${cfg.vocabSize})`);
  }));
  if (N > cfg.maxLen) fail(`'inputIds': sequences of ${N} positions are longer than the model's maxLen ${cfg.maxLen}`);
  const tv = o['t'];
  if (!Array.isArray(tv) || tv.length !== B || !tv.every((x) => Number.isInteger(x) && x >= 0 && x < cfg.diffusionSteps)) {
    fail(`'t' must hold ${B} integers in [0, ${cfg.diffusionSteps})`);
  }
  const e = cfg.embDim;
  const cube = (name: string): Float64Array => {
    const v = o[name];
    const out = new Float64Array(B * N * e);
    if (!Array.isArray(v) || v.length !== B) fail(`'${name}' must be [${B}][${N}][${e}]`);
    (v as unknown[]).forEach((row, b) => {
      if (!Array.isArray(row) || row.length !== N) fail(`'${name}[${b}]' must have ${N} rows of ${e}`);
      (row as unknown[]).forEach((vec, n) => {
        if (!Array.isArray(vec) || vec.length !== e) fail(`'${name}[${b}][${n}]' must have ${e} numbers (embDim)`);
        (vec as unknown[]).forEach((x, c) => {
          if (typeof x !== 'number' || !Number.isFinite(x)) fail(`'${name}[${b}][${n}][${c}]' must be a finite number`);
          out[(b * N + n) * e + c] = x as number;
        });
      });
    });
    return out;
  };
  const wv = o['weights'];
  if (wv !== undefined && (!Array.isArray(wv) || wv.length !== B || !wv.every((x) => typeof x === 'number' && Number.isFinite(x)))) fail(`'weights' must hold ${B} finite numbers`);
  return {
    batch: { inputIds: Int32Array.from(ids.flat()), inputMask: Int32Array.from(mask.flat()), batch: B, seqLen: N },
    noise: {
      t: tv as number[],
      eps0: cube('eps0'),
      eps: cube('eps'),
      replaceMask: Int32Array.from(rep.flat()),
      weights: (wv as number[] | undefined) ?? new Array<number>(B).fill(1),
    },
  };
}
