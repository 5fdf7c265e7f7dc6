/**
 * The settings as people read them: `--help` and docs/configuration.md, both from the tables.
 */
import { z } from 'zod';
import { formatDuration } from '../duration.js';
import { COMMAND_SETTINGS } from './commands.js';
import type { CommandName } from './commands.js';
import { envName, flagName, formatAddress, withDefaults } from './setting.js';
import type { Address, Kind, Settings } from './setting.js';

/** One setting as the configuration reference (docs/configuration.md) lists it. */
export interface SettingReference {
  readonly key: string;
  readonly flag: string;
  readonly env: string;
  readonly kind: string;
  readonly help: string;
  /** The default as written on a command line; undefined when there is none. */
  readonly default?: string | undefined;
  /** The allowed values, for enumerations. */
  readonly choices?: readonly string[] | undefined;
}

/**
 * One command's settings with their spellings, kinds, defaults (as written on a command line,
 * when nothing else is given) and allowed values.
 *
 * @example
 * ```ts
 * describeSettings('ca').find((s) => s.key === 'certLifetime')?.default; // '24h'
 * ```
 */
export function describeSettings(command: CommandName): SettingReference[] {
  const settings: Settings = COMMAND_SETTINGS[command];
  const defaults = withDefaults(settings, {});
  return Object.entries(settings).map(([key, s]) => {
    let type: z.ZodType = s.schema;
    while (type instanceof z.ZodOptional || type instanceof z.ZodDefault)
      type = (type as z.ZodOptional).unwrap() as z.ZodType;
    const choices = type instanceof z.ZodEnum ? (type.options as string[]) : undefined;
    return {
      key,
      flag: `--${flagName(key)}`,
      env: envName(key),
      kind: s.kind,
      help: s.help,
      default: formatSetting(s.kind, defaults[key]),
      ...(choices === undefined ? {} : { choices }),
    };
  });
}

/**
 * Every command's settings (see {@link describeSettings}): what `npm run docs:config` writes into
 * docs/configuration.md, so the page cannot drift from the code.
 *
 * @example
 * ```ts
 * configReference().ca.find((s) => s.key === 'certLifetime')?.default; // '24h'
 * ```
 */
export function configReference(): Record<CommandName, SettingReference[]> {
  const commands = Object.keys(COMMAND_SETTINGS) as CommandName[];
  const all = commands.map((c) => [c, describeSettings(c)]);
  return Object.fromEntries(all) as Record<CommandName, SettingReference[]>;
}

function formatSetting(kind: Kind, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  switch (kind) {
    case 'duration':
      return typeof value === 'number' ? formatDuration(value) : String(value);
    case 'address':
      return formatAddress(value as Address);
    case 'list':
      return Array.isArray(value) && value.length === 0 ? undefined : (value as string[]).join(',');
    default:
      return String(value);
  }
}
