/**
 * One place for command-line parsing, help text and option validation. Every command declares its
 * options as data (an {@link OptionSpec} table); parsing, `--help` and error messages are generated
 * from that table, so the help text cannot drift from what the parser accepts.
 */
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.js';

/** Declaration of one `--flag`. */
export interface OptionSpec {
  /** `string`, `boolean`, `number` (float) or `int`. */
  readonly type: 'string' | 'boolean' | 'number' | 'int';
  /** One line for `--help`. */
  readonly description: string;
  readonly short?: string;
  /** May be given several times; the value is then an array. */
  readonly multiple?: boolean;
  /** Allowed values of a string option. */
  readonly choices?: readonly string[];
  /** Shown in `--help` after the flag, e.g. `FILE`. */
  readonly placeholder?: string;
  /** Documented default (the command applies it; shown in `--help`). */
  readonly default?: string | number | boolean;
}

/** The option table of a command. */
export type OptionTable = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S['type'] extends 'boolean'
  ? boolean
  : S['type'] extends 'string'
    ? S['multiple'] extends true
      ? string[]
      : string
    : S['multiple'] extends true
      ? number[]
      : number;

/** Parsed option values, typed from the table; absent flags are undefined. */
export type OptionValues<O extends OptionTable> = { -readonly [K in keyof O]: ValueOf<O[K]> | undefined };

/** A sub-command of the `moe-diffuseq` CLI. */
export interface Command<O extends OptionTable = OptionTable> {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** Usage line(s) after `moe-diffuseq `, e.g. `eval --hyp FILE --ref FILE`. */
  readonly usage: string;
  /** Longer text printed by `--help` (optional). */
  readonly details?: string;
  readonly options: O;
  /** Whether positional arguments are accepted (default: none). */
  readonly positionals?: { readonly name: string; readonly min: number; readonly max: number };
  /** Runs the command; returns the process exit code (default 0). */
  run(opts: OptionValues<O>, positionals: string[]): Promise<number | void>;
}

/** Declares a command with its option table typed (identity function for inference). */
export function defineCommand<O extends OptionTable>(c: Command<O>): Command<O> {
  return c;
}

function convert(cmd: string, flag: string, spec: OptionSpec, raw: string): string | number {
  if (spec.type === 'string') {
    if (spec.choices && !spec.choices.includes(raw)) {
      throw new UsageError(`${cmd}: --${flag} must be one of ${spec.choices.join(', ')} (got '${raw}')`);
    }
    return raw;
  }
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v)) throw new UsageError(`${cmd}: --${flag} expects a number (got '${raw}')`);
  if (spec.type === 'int' && !Number.isInteger(v)) throw new UsageError(`${cmd}: --${flag} expects an integer (got '${raw}')`);
  return v;
}

/** Parses `argv` (the arguments after the command name) against a command's option table. */
export function parseCommandArgs<O extends OptionTable>(
  command: Command<O>,
  argv: string[],
): { values: OptionValues<O>; positionals: string[]; help: boolean } {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [flag, spec] of Object.entries(command.options)) {
    config[flag] = {
      type: spec.type === 'boolean' ? 'boolean' : 'string',
      ...(spec.short ? { short: spec.short } : {}),
      ...(spec.multiple ? { multiple: true } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: config, allowPositionals: true, strict: true });
  } catch (e) {
    // node's messages are good ("Unknown option '--foo'"); prefix the command and point at --help
    const msg = (e as Error).message.replace(/\. To specify a positional argument.*$/s, '');
    throw new UsageError(`${command.name}: ${msg}`, `moe-diffuseq ${command.name} --help`);
  }
  const help = parsed.values['help'] === true;
  const values: Record<string, unknown> = {};
  for (const [flag, spec] of Object.entries(command.options)) {
    const raw = parsed.values[flag];
    if (raw === undefined) continue;
    if (spec.type === 'boolean') values[flag] = raw;
    else if (Array.isArray(raw)) values[flag] = raw.map((r) => convert(command.name, flag, spec, String(r)));
    else values[flag] = convert(command.name, flag, spec, String(raw));
  }
  const pos = parsed.positionals;
  const p = command.positionals ?? { name: '', min: 0, max: 0 };
  if (!help && (pos.length < p.min || pos.length > p.max)) {
    if (p.max === 0) throw new UsageError(`${command.name}: unexpected argument '${pos[0]}'`, `moe-diffuseq ${command.name} --help`);
    throw new UsageError(
      `${command.name}: expected ${p.min === p.max ? p.min : `${p.min} to ${p.max}`} ${p.name} argument(s), got ${pos.length}`,
      `moe-diffuseq ${command.name} --help`,
    );
  }
  return { values: values as OptionValues<O>, positionals: pos, help };
}

/** `--help` text of a command, generated from its table. */
export function commandHelp(command: Command<OptionTable>): string {
  const lines = [`Usage: moe-diffuseq ${command.usage}`, '', command.summary];
  if (command.details) lines.push('', command.details.trimEnd());
  const rows: [string, string][] = [];
  for (const [flag, spec] of Object.entries(command.options)) {
    const ph = spec.type === 'boolean' ? '' : ` ${spec.placeholder ?? (spec.choices ? spec.choices.join('|') : spec.type === 'string' ? 'VALUE' : 'N')}`;
    const left = `${spec.short ? `-${spec.short}, ` : '    '}--${flag}${ph}`;
    let right = spec.description;
    if (spec.default !== undefined) right += ` (default: ${spec.default})`;
    if (spec.multiple) right += ' [repeatable]';
    rows.push([left, right]);
  }
  rows.push(['-h, --help', 'show this help']);
  const width = Math.min(34, Math.max(...rows.map((r) => r[0].length)) + 2);
  lines.push('', 'Options:');
  for (const [l, r] of rows) lines.push(`  ${l.padEnd(width)}${l.length >= width ? `\n  ${' '.repeat(width)}` : ''}${r}`);
  return lines.join('\n') + '\n';
}

/** Throws a UsageError when a required option is absent; returns its value otherwise. */
export function required<T>(command: string, flag: string, value: T | undefined): T {
  if (value === undefined) throw new UsageError(`${command}: --${flag} is required`, `moe-diffuseq ${command} --help`);
  return value;
}
