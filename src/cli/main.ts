#!/usr/bin/env node
/**
 * The `moe-diffuseq` command line: dispatches to a sub-command, prints `--help` and `--version`, and
 * turns every library error into one line on stderr with exit code 2 (never a stack trace, unless
 * MOE_DIFFUSEQ_DEBUG=1).
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { MoeDiffuseqError } from '../errors.js';
import { VERSION } from '../version.js';
import { commandHelp, parseCommandArgs, type Command, type OptionTable } from './command.js';
import { commands } from './commands.js';

function mainHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    `moe-diffuseq ${VERSION}: long-document diffusion language models (MoE-DiffuSeq) in TypeScript`,
    '',
    'Usage: moe-diffuseq <command> [options]',
    '',
    'Commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    'Run `moe-diffuseq <command> --help` for the options of a command.',
    'Global: --help, --version',
    '',
  ].join('\n');
}

/** Runs the CLI on `argv` (without node and script); resolves to the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const command = commands.find((c) => c.name === name) as Command<OptionTable> | undefined;
  try {
    if (!command) {
      process.stderr.write(`moe-diffuseq: unknown command '${name}'\nhint: moe-diffuseq --help lists the commands\n`);
      return 2;
    }
    const { values, positionals, help } = parseCommandArgs(command, rest);
    if (help) {
      process.stdout.write(commandHelp(command));
      return 0;
    }
    return (await command.run(values, positionals)) ?? 0;
  } catch (e) {
    return reportError(e);
  }
}

/** Prints an error the way the CLI does; returns the exit code (2 for ours, 1 for a bug). */
export function reportError(e: unknown): number {
  const debug = process.env['MOE_DIFFUSEQ_DEBUG'] === '1';
  if (e instanceof MoeDiffuseqError) {
    process.stderr.write(`moe-diffuseq: error: ${e.message}\n${e.hint ? `hint: ${e.hint}\n` : ''}`);
    if (debug) process.stderr.write(`${e.stack}\n`);
    return 2;
  }
  const err = e as Error;
  process.stderr.write(`moe-diffuseq: internal error: ${err?.message ?? String(e)}\n`);
  process.stderr.write(debug ? `${err?.stack}\n` : 'hint: set MOE_DIFFUSEQ_DEBUG=1 for the stack trace, and please report it\n');
  return 1;
}

/** True when this module is the process's entry script (not when imported, e.g. by tests). */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false; // argv[1] is not a file (node -e, a REPL)
  }
}

const isMain = isEntryPoint();
if (isMain) {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.exitCode = reportError(e);
    },
  );
}
