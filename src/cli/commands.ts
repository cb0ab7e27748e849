/** The registry of CLI commands, in the order `--help` lists them. */
import type { Command, OptionTable } from './command.js';
import { infoCommand } from './info.js';

/** Every sub-command of `moe-diffuseq`. */
export const commands: readonly Command<OptionTable>[] = [infoCommand as unknown as Command<OptionTable>];
