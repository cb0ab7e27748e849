/** The registry of CLI commands, in the order `--help` lists them. */
import type { Command, OptionTable } from './command.js';
import { evalCommand } from './commands/eval.js';
import { checkLossCommand, initCommand } from './commands/model-tools.js';
import { tokenizerCommand } from './commands/tokenizer.js';
import { infoCommand } from './info.js';

/** Every sub-command of `moe-diffuseq`. */
export const commands: readonly Command<OptionTable>[] = [evalCommand, initCommand, checkLossCommand, tokenizerCommand, infoCommand] as unknown as Command<OptionTable>[];
