/**
 * What a setting is (its kind, zod schema, help and default, declared together in one table
 * entry), the value shapes several commands share, and how a camelCase key is spelled as a flag
 * and an environment variable. The tables themselves are in the files beside this one, one per
 * component; core/config.ts loads them.
 */
import { z } from 'zod';
import { parseDuration } from '../duration.js';
import { isDns1123Label, isDns1123Subdomain } from '../identity.js';

/** A `host:port` listen or dial address. */
export interface Address {
  readonly host: string;
  readonly port: number;
}

/**
 * How a setting is written on the command line and in the environment. A `path` is a string
 * naming a file or folder: relative in a `--config` file, it is relative to that file's folder.
 */
export type Kind = 'string' | 'path' | 'boolean' | 'duration' | 'address' | 'integer' | 'list';

/** The values given (file, environment, flags) before defaults: what a derived default reads. */
export type Given = Readonly<Record<string, unknown>>;

/** A default derived from the values given for the other settings; undefined: none. */
type DerivedDefault<T> = (given: Given) => T | undefined;

/**
 * One setting: everything about it, in one place. Declared with its kind's function, then its
 * help line: `duration(positiveMs, DEFAULTS.certLifetimeMs).describe('leaf certificate lifetime')`.
 */
export class Setting<S extends z.ZodType = z.ZodType> {
  /** The value when none is given: a named constant of core/defaults.ts, or derived. */
  readonly default: z.output<S> | DerivedDefault<z.output<S>> | undefined;

  constructor(
    readonly kind: Kind,
    /** What a value must be once defaults are applied (`.optional()` when it may stay unset). */
    readonly schema: S,
    dflt?: z.output<S> | DerivedDefault<z.output<S>>,
    /** One line for `--help` and docs/configuration.md. */
    readonly help = '',
  ) {
    this.default = dflt;
  }

  /** This setting with its help line (a shared one: with this command's meaning of it). */
  describe(help: string): Setting<S> {
    return new Setting(this.kind, this.schema, this.default, help);
  }

  /** This setting with a default of one command's own, derived from the other given values. */
  derive(dflt: DerivedDefault<z.output<S>>): Setting<S> {
    return new Setting(this.kind, this.schema, dflt, this.help);
  }
}

/** A command's settings, keyed by their camelCase names. */
export type Settings = Readonly<Record<string, Setting>>;

/** The functions that declare a setting of each kind: `path(nonEmpty, DEFAULTS.stateDir)`. */
const ofKind =
  (kind: Kind) =>
  <S extends z.ZodType>(schema: S, dflt?: z.output<S> | DerivedDefault<z.output<S>>) =>
    new Setting(kind, schema, dflt);
export const string = ofKind('string');
export const path = ofKind('path');
export const integer = ofKind('integer');
export const duration = ofKind('duration');
export const address = ofKind('address');
export const list = ofKind('list');

/** A switch; off unless given (or unless `dflt` says otherwise). */
export function boolean(dflt: boolean | DerivedDefault<boolean> = false): Setting<z.ZodBoolean> {
  return new Setting('boolean', z.boolean(), dflt);
}

/** The strict zod object of a settings table: unknown keys are errors. */
export function schemaOf<T extends Settings>(settings: T) {
  const shape = Object.fromEntries(Object.entries(settings).map(([k, s]) => [k, s.schema]));
  return z.strictObject(shape as { -readonly [K in keyof T]: T[K]['schema'] });
}

/** The given values with every missing default filled in. */
export function withDefaults(settings: Settings, given: Given): Record<string, unknown> {
  const out: Record<string, unknown> = { ...given };
  for (const [key, s] of Object.entries(settings)) {
    if (key in given || s.default === undefined) continue;
    const value =
      typeof s.default === 'function' ? (s.default as DerivedDefault<unknown>)(given) : s.default;
    if (value !== undefined) out[key] = value;
  }
  return out;
}

// ---- value shapes several commands share -----------------------------------------------------

export const nonEmpty = z.string().min(1, 'must not be empty');
export const label = nonEmpty.refine(isDns1123Label, 'must be a DNS-1123 label');
export const subdomain = nonEmpty.refine(isDns1123Subdomain, 'must be a DNS-1123 subdomain');
export const positiveMs = z.number().int().positive('must be a positive duration');
export const addr = z.object({ host: z.string(), port: z.number().int().min(0).max(65535) });
export const hostPort = nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT');
export const port = z.number().int().min(1).max(65535);
export const output = z.enum(['text', 'json']);
export const configMapKey = nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key');
export const imageRef = nonEmpty.regex(/^[^\s]+$/, 'must be an image reference without spaces');
export const failurePolicy = z.enum(['Fail', 'Ignore']);
export const tokenValidator = z.enum(['jwks', 'tokenreview']);
/** A Kubernetes signer name: a DNS domain, a slash, a name (`meshid.io/workload-identity`). */
export const signerName = nonEmpty.regex(
  /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+\/[A-Za-z0-9][-._A-Za-z0-9]*$/,
  'must be a signer name: a domain, "/", a name (e.g. meshid.io/workload-identity)',
);
export const workers = z.number().int().min(0, 'must be 0 (one per core) or more').max(64);
export const skew = z.number().int().min(0).max(3_600_000, 'must be at most 1h');
export const probeTimeout = positiveMs.max(120_000, 'must be at most 2m');
/** Seconds-long lifetimes are for tests and drills of renewal; production uses hours. */
export const lifetime = positiveMs
  .min(5_000, 'must be at least 5s')
  .max(366 * 24 * 3_600_000, 'must be at most 8784h');
/** A Kubernetes resource quantity: 100m, 0.5, 96Mi, 1G, 1e3. */
export const quantity = nonEmpty.regex(
  /^[0-9]+(\.[0-9]+)?([eE][0-9]+|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/,
  'must be a Kubernetes quantity such as 100m or 96Mi',
);
/** A whole number from `min` to `max`. */
export const count = (min: number, max: number, minMessage?: string) =>
  z.number().int().min(min, minMessage).max(max);

// ---- spelling ---------------------------------------------------------------------------------

/** `certLifetime` → `cert-lifetime`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `certLifetime` → `MESHID_CERT_LIFETIME`. */
export function envName(key: string): string {
  return `MESHID_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/**
 * Parses `host:port`, `[v6]:port`.
 *
 * @example
 * ```ts
 * parseAddress('127.0.0.1:8080'); // { host: '127.0.0.1', port: 8080 }
 * ```
 */
export function parseAddress(text: string): Address | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** Formats an address for logs and dialing. */
export function formatAddress(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** One raw value (a flag, an environment variable or a file entry) read as its kind. */
export function parseValue(kind: Kind, raw: unknown): { value?: unknown; error?: string } {
  switch (kind) {
    case 'string':
    case 'path':
      return typeof raw === 'string'
        ? { value: raw }
        : { error: `must be a string, got ${describe(raw)}` };
    case 'boolean':
      if (typeof raw === 'boolean') return { value: raw };
      if (raw === 'true' || raw === '1') return { value: true };
      if (raw === 'false' || raw === '0' || raw === '') return { value: false };
      return { error: `must be true or false, got ${describe(raw)}` };
    case 'integer': {
      const n =
        typeof raw === 'number'
          ? raw
          : typeof raw === 'string' && /^\d+$/.test(raw)
            ? Number(raw)
            : NaN;
      return Number.isInteger(n)
        ? { value: n }
        : { error: `must be a whole number, got ${describe(raw)}` };
    }
    case 'duration': {
      const ms = typeof raw === 'string' ? parseDuration(raw) : undefined;
      return ms === undefined
        ? { error: `must be a duration such as 24h, 20s or 1h30m, got ${describe(raw)}` }
        : { value: ms };
    }
    case 'list': {
      // A flag may repeat; an environment variable lists its values comma-separated.
      const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : [raw];
      return items.every((i) => typeof i === 'string' && i.trim() !== '')
        ? { value: items.map((i) => (i as string).trim()) }
        : { error: `must be a list of non-empty strings, got ${describe(raw)}` };
    }
    case 'address': {
      const a = typeof raw === 'string' ? parseAddress(raw) : undefined;
      return a === undefined
        ? { error: `must be HOST:PORT (port 0-65535; [v6]:PORT), got ${describe(raw)}` }
        : { value: a };
    }
  }
}

function describe(raw: unknown): string {
  return typeof raw === 'string' ? JSON.stringify(raw) : (JSON.stringify(raw) ?? String(raw));
}
