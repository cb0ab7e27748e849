/**
 * Typed errors. The library throws these; the CLI maps every one of them to a one-line message and
 * exit code 2 (see src/cli/main.ts). Each names what went wrong, where, and what was expected, and
 * may carry a `hint` naming the command or option that fixes it.
 */

/** Base class of every error this package throws on purpose. */
export class MoeDiffuseqError extends Error {
  /** A short suggestion of how to fix the problem, printed after the message by the CLI. */
  readonly hint: string | undefined;
  constructor(message: string, hint?: string) {
    super(message);
    this.name = new.target.name;
    this.hint = hint;
  }
}

/** A tensor operation got operands of incompatible shapes. */
export class ShapeError extends MoeDiffuseqError {
  constructor(readonly op: string, detail: string, readonly shapes: readonly (readonly number[])[] = []) {
    super(`${op}: ${detail}${shapes.length ? ` (shapes ${shapes.map((s) => `[${s.join(', ')}]`).join(', ')})` : ''}`);
  }
}

/** A tensor operation got operands of the wrong or mismatched dtypes. */
export class DTypeError extends MoeDiffuseqError {
  constructor(readonly op: string, detail: string) {
    super(`${op}: ${detail}`);
  }
}

/** An index (token id, expert id, position) lies outside its valid range. */
export class IndexError extends MoeDiffuseqError {
  constructor(readonly op: string, detail: string) {
    super(`${op}: ${detail}`);
  }
}

/**
 * Bad user input in a file: names the file and, where it makes sense, the 1-based line.
 * `file:line: message` is the printed form, as compilers do.
 */
export class InputError extends MoeDiffuseqError {
  constructor(readonly file: string, readonly line: number | undefined, readonly detail: string, hint?: string) {
    super(`${file}${line !== undefined ? `:${line}` : ''}: ${detail}`, hint);
  }
}

/** An invalid model or training configuration (unknown field, value out of range, inconsistent sizes). */
export class ConfigError extends MoeDiffuseqError {}

/** A checkpoint or safetensors file that is malformed or does not match the configuration. */
export class CheckpointError extends MoeDiffuseqError {}

/** Wrong command-line usage: unknown flag, missing argument, bad value. */
export class UsageError extends MoeDiffuseqError {}

/** A device (CUDA driver, library) is missing or failed. */
export class DeviceError extends MoeDiffuseqError {}

/** Training diverged (NaN or infinite loss). */
export class DivergenceError extends MoeDiffuseqError {}
