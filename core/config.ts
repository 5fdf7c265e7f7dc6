/**
 * One configuration schema for every meshid command, validated once at start-up.
 *
 * Sources, lowest to highest precedence: a YAML or JSON file (`--config`), `MESHID_*`
 * environment variables, command-line flags. Every setting has all three spellings, derived from
 * one camelCase key: `certLifetime` ↔ `MESHID_CERT_LIFETIME` ↔ `--cert-lifetime`. Unknown keys,
 * variables and flags are errors, never silent defaults. Every problem is reported at once with
 * the field it concerns, and the result is frozen. Relative paths in a `--config` file are
 * relative to the file's folder (on the command line and in the environment, to the working
 * directory, as usual).
 *
 * To add a setting, add ONE entry to its command's table in core/config/<component>.ts:
 *
 *     myTimeout: setting('duration', positiveMs, 'what it bounds, for --help', DEFAULTS.myTimeoutMs),
 *
 * with the default as a named constant in core/defaults.ts (or derived from the other given
 * values: `(given) => …`; none when it is required or optional). The flag `--my-timeout`, the
 * variable `MESHID_MY_TIMEOUT`, the config key, the validation, `--help`, the config type and
 * (after `npm run docs:config`) docs/configuration.md all follow from that entry. A setting
 * several commands share is declared once in core/config/common.ts; checks across settings go
 * in the command's `superRefine`.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type * as Yaml from 'yaml';
import { MeshidError } from './errors.js';
import { didYouMean } from './suggest.js';
import { COMMAND_SETTINGS, SCHEMAS } from './config/commands.js';
import type { CommandConfigs, CommandName } from './config/commands.js';
import { IN_CLUSTER, KUBERNETES_JWKS } from './config/names.js';
import { envName, flagName, parseValue, withDefaults } from './config/setting.js';
import type { Settings } from './config/setting.js';

export { COMMAND_SETTINGS } from './config/commands.js';
export type * from './config/commands.js';
export {
  caIdentityName,
  DESTINATION_SERVICE_NAME,
  destinationIdentityName,
  destinationServiceAddress,
  IN_CLUSTER,
  KUBERNETES_JWKS,
  localStateInputs,
} from './config/names.js';
export { configReference, describeSettings } from './config/reference.js';
export type { SettingReference } from './config/reference.js';
export { envName, flagName, formatAddress, parseAddress } from './config/setting.js';
export type { Address } from './config/setting.js';

/** Every `MESHID_*` name some command knows, so that a typo is caught wherever it is set. */
const KNOWN_ENV = new Set(
  Object.values(COMMAND_SETTINGS).flatMap((s) => Object.keys(s).map(envName)),
);

/** Where the raw values come from; `env` and `argv` are passed in so tests control them. */
export interface ConfigSources {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Reads the `--config` file; defaults to the real file system. */
  readonly readFile?: (path: string) => string;
}

interface Problem {
  readonly field: string;
  readonly message: string;
}

/** The raw values of one command as they are read, and the problems found reading them. */
class Reading {
  readonly given: Record<string, unknown> = {};
  readonly problems: Problem[] = [];
  constructor(
    readonly command: CommandName,
    readonly settings: Settings,
  ) {}

  /** Records one value; `base` is the folder relative paths are relative to (a config file's). */
  put(key: string, value: unknown, where: string, base?: string): void {
    const setting = this.settings[key];
    if (setting === undefined) {
      this.problems.push({
        field: where,
        message: `unknown setting for "meshid ${this.command}"${didYouMean(key, Object.keys(this.settings))}`,
      });
      return;
    }
    const parsed = parseValue(setting.kind, value);
    if (parsed.error !== undefined) this.problems.push({ field: where, message: parsed.error });
    else
      this.given[key] =
        setting.kind === 'path' && base !== undefined
          ? resolvePath(base, parsed.value as string)
          : parsed.value;
  }
}

/**
 * A path written in a config file, made relative to the file's folder: absolute paths, URLs and
 * the keywords some path settings take (`in-cluster`, `kubernetes`) stay as written.
 */
function resolvePath(base: string, value: string): string {
  if (value === '' || isAbsolute(value) || /^[a-z][a-z0-9+.-]*:/i.test(value)) return value;
  if (value === IN_CLUSTER || value === KUBERNETES_JWKS) return value;
  return resolve(base, value);
}

/**
 * Loads, merges and validates the configuration of one command. Throws ERR_CONFIG_INVALID
 * listing every problem with its field.
 *
 * @example
 * ```ts
 * const { config } = loadConfig('ca', { argv: ['--listen', '127.0.0.1:0'], env: process.env });
 * ```
 */
export function loadConfig<C extends CommandName>(
  command: C,
  sources: ConfigSources,
): {
  config: CommandConfigs[C];
  /** The settings given by a flag, a MESHID_ variable or the --config file (not defaulted). */
  given: ReadonlySet<string>;
} {
  const settings: Settings = COMMAND_SETTINGS[command];
  const reading = new Reading(command, settings);
  // Flags are parsed first (to find --config) but applied last.
  const flags = parseFlags(command, sources.argv, settings);
  const configPath = (flags['config'] as string | undefined) ?? sources.env[envName('config')];
  if (configPath !== undefined && configPath !== '') readConfigFile(reading, configPath, sources);

  for (const [name, value] of Object.entries(sources.env)) {
    if (!name.startsWith('MESHID_') || value === undefined) continue;
    const key = Object.keys(settings).find((k) => envName(k) === name);
    if (key === undefined) {
      if (!KNOWN_ENV.has(name))
        reading.problems.push({
          field: name,
          message: `unknown MESHID_ environment variable${didYouMean(name, KNOWN_ENV)}`,
        });
      continue;
    }
    if (key !== 'config') reading.put(key, value, name);
  }

  for (const [flag, value] of Object.entries(flags)) {
    if (value === undefined || flag === 'config') continue;
    const key = Object.keys(settings).find((k) => flagName(k) === flag)!;
    reading.put(key, value, `--${flag}`);
  }

  if (reading.problems.length > 0) throw configError(command, reading.problems);
  const result = SCHEMAS[command].safeParse(withDefaults(settings, reading.given));
  if (!result.success) {
    throw configError(
      command,
      result.error.issues.map((i) => {
        const key = String(i.path[0] ?? '');
        return {
          field: key === '' ? '(config)' : `${key} (--${flagName(key)}, ${envName(key)})`,
          message: i.code === 'invalid_type' && i.input === undefined ? 'is required' : i.message,
        };
      }),
    );
  }
  return {
    config: deepFreeze(result.data) as CommandConfigs[C],
    given: new Set(Object.keys(reading.given)),
  };
}

/** Reads the `--config` file into `reading`; its relative paths are relative to its folder. */
function readConfigFile(reading: Reading, configPath: string, sources: ConfigSources): void {
  const read = sources.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  let doc: unknown;
  try {
    doc = parseYaml(read(configPath));
  } catch (err) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `config file ${configPath}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (doc === null || doc === undefined) return;
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    reading.problems.push({ field: configPath, message: 'must be a mapping of settings' });
    return;
  }
  const base = dirname(resolve(configPath));
  for (const [key, value] of Object.entries(doc)) {
    if (key === 'config')
      reading.problems.push({
        field: `${configPath}: config`,
        message: 'cannot be set in a config file',
      });
    else reading.put(key, value, `${configPath}: ${key}`, base);
  }
}

/**
 * The YAML parser, loaded only when a `--config` file is given: about 9 MB of every process,
 * which a sidecar configured by flags and environment does without.
 */
function parseYaml(text: string): unknown {
  return (createRequire(import.meta.url)('yaml') as typeof Yaml).parse(text);
}

function parseFlags(
  command: string,
  argv: readonly string[],
  settings: Settings,
): Record<string, unknown> {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [key, s] of Object.entries(settings)) {
    options[flagName(key)] =
      s.kind === 'list'
        ? { type: 'string', multiple: true }
        : { type: s.kind === 'boolean' ? 'boolean' : 'string' };
  }
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const e = err as Error & { code?: string };
    const unknown = /^Unknown option '(-{1,2}[^'=]*)/.exec(e.message)?.[1];
    const message =
      e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown !== undefined
        ? `unknown flag ${unknown}${didYouMean(unknown.replace(/^-+/, ''), Object.keys(options), (f) => `--${f}`)} ('meshid ${command} --help' lists every flag)`
        : e.message;
    throw new MeshidError('ERR_CONFIG_INVALID', `meshid ${command}: ${message}`);
  }
}

function configError(command: string, problems: readonly Problem[]): MeshidError {
  const lines = problems.map((p) => `  ${p.field}: ${p.message}`).join('\n');
  return new MeshidError(
    'ERR_CONFIG_INVALID',
    `invalid configuration for "meshid ${command}" (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${lines}`,
  );
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
