/**
 * A list of mixing modes on the command line (`--modes standard,moi` for eval,
 * `--compare-modes standard,moi,soft` for traces): the mode setting's choices, each once.
 */
import { UsageError } from '@moi/core';
import { MIX_MODES, type MixMode } from '@moi/moi';

export function parseModeList(list: string, flag: string): MixMode[] {
  const modes = list
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  if (!modes.length) throw new UsageError('E_USAGE', `${flag} needs a list such as standard,moi`);
  for (const m of modes) {
    if (!MIX_MODES.includes(m as MixMode))
      throw new UsageError('E_USAGE', `${flag}: unknown mode "${m}" (use ${MIX_MODES.join(', ')})`);
  }
  if (new Set(modes).size !== modes.length) throw new UsageError('E_USAGE', `${flag}: a mode is listed twice`);
  return modes as MixMode[];
}
