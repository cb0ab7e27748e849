/**
 * Collecting bad input instead of throwing (the readers' `skipBad` option).
 *
 * Skipping must never be silent: every skipped line is counted, and the first few are kept with their
 * `file:line` so that a caller can print a short report and a user can find and fix them.
 */
import { InputError } from '../errors.js';

/** Counts the records a reader skipped under `skipBad` and keeps the first few errors for a report. */
export class BadInputReport {
  /** How many records (lines, files) were skipped. */
  count = 0;
  /** The first `maxExamples` problems, in the order they were met. */
  readonly examples: InputError[] = [];
  /** How many problems are kept in `examples` (the rest are only counted). */
  readonly maxExamples: number;

  /** @param maxExamples how many problems to keep for the report (default 5). */
  constructor(maxExamples = 5) {
    this.maxExamples = maxExamples;
  }

  /** Records one skipped record. */
  add(error: InputError): void {
    this.count++;
    if (this.examples.length < this.maxExamples) this.examples.push(error);
  }

  /**
   * A short human-readable report: `"no bad input"`, or the count followed by the first few problems,
   * one per line, each in the `file:line: what` form.
   */
  summary(): string {
    if (this.count === 0) return 'no bad input';
    const head = `${this.count} bad record${this.count === 1 ? '' : 's'} skipped`;
    const lines = this.examples.map((e) => `  ${e.message}`);
    const more = this.count > this.examples.length ? [`  ... and ${this.count - this.examples.length} more`] : [];
    return [head + ':', ...lines, ...more].join('\n');
  }
}

/**
 * What a reader does with one bad record: throw it (default) or, under `skipBad`, add it to the report.
 * Kept as one function so that every reader treats bad input the same way.
 */
export function handleBad(error: InputError, skipBad: boolean, report: BadInputReport): void {
  if (!skipBad) throw error;
  report.add(error);
}
