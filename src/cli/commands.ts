/** The registry of CLI commands, in the order `--help` lists them. */
import type { Command, OptionTable } from './command.js';
import { demoCommand } from './commands/demo.js';
import { evalCommand } from './commands/eval.js';
import { checkLossCommand, initCommand } from './commands/model-tools.js';
import { plotCommand } from './commands/plot.js';
import { sampleCommand } from './commands/sample.js';
import { trainCommand } from './commands/train.js';
import { tokenizerCommand } from './commands/tokenizer.js';
import { infoCommand } from './info.js';

/** Every sub-command of `moe-diffuseq`. */
export const commands: readonly Command<OptionTable>[] = [demoCommand, trainCommand, sampleCommand, evalCommand, plotCommand, initCommand, checkLossCommand, tokenizerCommand, infoCommand] as unknown as Command<OptionTable>[];
