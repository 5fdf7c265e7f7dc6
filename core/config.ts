/**
 * One configuration schema for every meshid command, validated once at start-up.
 *
 * Sources, lowest to highest precedence: a YAML or JSON file (`--config`), `MESHID_*`
 * environment variables, command-line flags. Every setting has all three spellings, derived from
 * one camelCase key: `certLifetime` ↔ `MESHID_CERT_LIFETIME` ↔ `--cert-lifetime`. Unknown keys,
 * variables and flags are errors, never silent defaults. Every problem is reported at once with
 * the field it concerns, and the result is frozen.
 */
import { readFileSync } from 'node:fs';
import type * as Yaml from 'yaml';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { DEFAULTS } from './defaults.js';
import { parseDuration } from './duration.js';
import { MeshidError } from './errors.js';
import {
  isDns1123Label,
  isDns1123Subdomain,
  namingProblems,
  parseIdentityName,
} from './identity.js';

/** A `host:port` listen or dial address. */
export interface Address {
  readonly host: string;
  readonly port: number;
}

/** How a setting is written on the command line and in the environment. */
type Kind = 'string' | 'boolean' | 'duration' | 'address' | 'integer' | 'list';

interface Setting {
  readonly kind: Kind;
  readonly help: string;
}

/** The settings every command shares. */
const COMMON = {
  config: { kind: 'string', help: 'YAML or JSON configuration file' },
  logLevel: { kind: 'string', help: 'fatal|error|warn|info|debug|trace|silent' },
  fips: { kind: 'boolean', help: 'FIPS mode (not implemented yet: true is refused)' },
} as const satisfies Record<string, Setting>;

const NAMING = {
  trustDomain: { kind: 'string', help: 'trust domain (DNS-1123 subdomain)' },
  controlPlaneNamespace: { kind: 'string', help: 'control-plane namespace in identity names' },
} as const satisfies Record<string, Setting>;

/** Settings per command. Flags are the kebab-case of the keys. */
export const COMMAND_SETTINGS = {
  init: {
    ...COMMON,
    dir: { kind: 'string', help: 'state folder to write' },
    force: { kind: 'boolean', help: 'overwrite existing material' },
    ...NAMING,
  },
  token: {
    ...COMMON,
    dir: { kind: 'string', help: 'state folder holding token-signing/key.pem' },
    ns: { kind: 'string', help: 'namespace of the service account' },
    sa: { kind: 'string', help: 'service account name' },
    ttl: { kind: 'duration', help: 'token lifetime' },
    audience: { kind: 'string', help: 'token audience' },
  },
  ca: {
    ...COMMON,
    dir: { kind: 'string', help: 'local state folder (written by meshid init)' },
    trustAnchors: { kind: 'string', help: 'PEM bundle of trust anchors' },
    issuerDir: { kind: 'string', help: 'folder with tls.crt, tls.key and optional ca.crt' },
    jwks: { kind: 'string', help: 'JWKS file path or https URL of the token issuer' },
    jwksCa: { kind: 'string', help: 'PEM CA bundle to trust for an https JWKS URL' },
    tokenIssuer: { kind: 'string', help: 'expected token issuer (iss)' },
    audience: { kind: 'string', help: 'expected token audience' },
    ...NAMING,
    identityName: { kind: 'string', help: "the CA's own TLS identity" },
    certLifetime: { kind: 'duration', help: 'leaf certificate lifetime' },
    clockSkew: { kind: 'duration', help: 'clock-skew allowance (back-dating, token leeway)' },
    listen: { kind: 'address', help: 'gRPC listen address' },
    admin: { kind: 'address', help: 'admin HTTP listen address' },
    workers: { kind: 'integer', help: 'worker processes (0 = one per core)' },
    kubeconfig: {
      kind: 'string',
      help: 'kubeconfig file for the Kubernetes API; "in-cluster" uses the pod\'s service account',
    },
    namespace: {
      kind: 'string',
      help: 'namespace of the issuer Secret, anchors ConfigMap and Events (default: the control-plane namespace)',
    },
    issuerSecret: {
      kind: 'string',
      help: 'issuer Secret (kubernetes.io/tls or linkerd.io/tls), watched through the API',
    },
    trustAnchorsConfigMap: {
      kind: 'string',
      help: 'trust-anchor ConfigMap, watched through the API (with issuerSecret)',
    },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    tokenValidator: {
      kind: 'string',
      help: 'tokenreview (ask the API server) or jwks (verify signatures with --jwks)',
    },
    tokenReviewCacheTtl: {
      kind: 'duration',
      help: 'how long a successful TokenReview is reused (never past the token expiry; 0s = off)',
    },
    tokenReviewCacheSize: { kind: 'integer', help: 'most TokenReview results kept' },
    tokenReviewUnsafeNoAudienceFallback: {
      kind: 'boolean',
      help: 'UNSAFE, Linkerd-compatible: retry a refused review without audience (accepts any API token)',
    },
    events: { kind: 'boolean', help: 'record Kubernetes Events (when a kubeconfig is in use)' },
  },
  install: {
    ...COMMON,
    ...NAMING,
    image: { kind: 'string', help: 'meshid container image' },
    replicas: { kind: 'integer', help: 'identity CA replicas' },
    trustAnchors: {
      kind: 'string',
      help: 'PEM trust-anchor bundle to put in the anchors ConfigMap (omitted: managed elsewhere)',
    },
    issuerSecret: { kind: 'string', help: 'issuer Secret the CA reads' },
    trustAnchorsConfigMap: { kind: 'string', help: 'trust-anchor ConfigMap the CA reads' },
    trustAnchorsKey: { kind: 'string', help: 'key of the bundle in the trust-anchor ConfigMap' },
    tokenValidator: {
      kind: 'string',
      help: "tokenreview (RBAC to create TokenReviews) or jwks (the cluster's OIDC discovery keys)",
    },
    certLifetime: { kind: 'duration', help: 'leaf certificate lifetime' },
    clockSkew: { kind: 'duration', help: 'clock-skew allowance' },
    certManager: {
      kind: 'boolean',
      help: 'render cert-manager resources that issue the identity issuer Secret',
    },
    certManagerIssuer: {
      kind: 'string',
      help: 'cert-manager Issuer (in the namespace) that holds the trust-anchor key',
    },
  },
  proxy: {
    ...COMMON,
    identityAddr: { kind: 'string', help: 'the CA, HOST:PORT' },
    identityName: { kind: 'string', help: "the CA's identity (its TLS certificate's name)" },
    trustAnchors: { kind: 'string', help: 'PEM bundle of trust anchors (watched)' },
    tokenFile: { kind: 'string', help: 'projected ServiceAccount token, re-read on every request' },
    localIdentity: { kind: 'string', help: "this workload's identity name" },
    inbound: { kind: 'address', help: 'inbound mTLS listen address' },
    app: { kind: 'address', help: 'the application, where inbound traffic goes' },
    outbound: { kind: 'address', help: 'outbound listen address' },
    route: {
      kind: 'list',
      help: 'LISTEN_ADDR=HOST:PORT@EXPECTED_IDENTITY, repeatable (env: comma-separated)',
    },
    destination: {
      kind: 'list',
      help: 'for the outbound HTTP listener: AUTHORITY=HOST:PORT@EXPECTED_IDENTITY, repeatable',
    },
    admin: { kind: 'address', help: 'admin HTTP listen address' },
    identityRetryMax: {
      kind: 'duration',
      help: 'longest wait between failed certificate requests (backoff cap)',
    },
    allowIdentity: { kind: 'list', help: 'inbound: identities allowed (default: any meshed peer)' },
    allowServiceAccount: { kind: 'list', help: 'inbound: service accounts allowed, ns/sa' },
    allowNamespace: { kind: 'list', help: 'inbound: namespaces allowed' },
    allowUnauthenticated: { kind: 'boolean', help: 'inbound: accept plaintext peers' },
    appProtocol: {
      kind: 'list',
      help: 'inbound: what the app speaks, http1|h2|detect|opaque, for the --app port or as PORT=PROTOCOL for another app port (repeatable; default detect)',
    },
    appTimeout: {
      kind: 'duration',
      help: 'inbound: how long the app may take to start an answer before the client gets 504 (0s = no limit; gRPC exempt)',
    },
    ...NAMING,
  },
  local: {
    ...COMMON,
    dir: { kind: 'string', help: 'local state folder' },
    listen: { kind: 'address', help: 'gRPC listen address' },
    admin: { kind: 'address', help: 'admin HTTP listen address' },
    workers: { kind: 'integer', help: 'worker processes (0 = one per core)' },
  },
} as const satisfies Record<string, Record<string, Setting>>;

export type CommandName = keyof typeof COMMAND_SETTINGS;

// ---- validated shapes -------------------------------------------------------------------------

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
const nonEmpty = z.string().min(1, 'must not be empty');
const label = nonEmpty.refine(isDns1123Label, 'must be a DNS-1123 label');
const subdomain = nonEmpty.refine(isDns1123Subdomain, 'must be a DNS-1123 subdomain');
const positiveMs = z.number().int().positive('must be a positive duration');
const address = z.object({ host: z.string(), port: z.number().int().min(0).max(65535) });
const workers = z.number().int().min(0, 'must be 0 (one per core) or more').max(64);

const commonShape = {
  config: z.string().optional(),
  logLevel,
  fips: z.boolean(),
};

const SCHEMAS = {
  init: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    force: z.boolean(),
    trustDomain: subdomain,
    controlPlaneNamespace: label,
  }),
  token: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    ns: label,
    sa: label,
    ttl: positiveMs.max(7 * 24 * 3_600_000, 'must be at most 168h'),
    audience: nonEmpty,
  }),
  ca: z
    .strictObject({
      ...commonShape,
      dir: nonEmpty.optional(),
      trustAnchors: nonEmpty.optional(),
      issuerDir: nonEmpty.optional(),
      jwks: nonEmpty.optional(),
      jwksCa: nonEmpty.optional(),
      tokenIssuer: nonEmpty.optional(),
      audience: nonEmpty,
      kubeconfig: nonEmpty.optional(),
      namespace: label,
      issuerSecret: subdomain.optional(),
      trustAnchorsConfigMap: subdomain.optional(),
      trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
      tokenValidator: z.enum(['jwks', 'tokenreview']),
      tokenReviewCacheTtl: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      tokenReviewCacheSize: z.number().int().min(0).max(1_000_000),
      tokenReviewUnsafeNoAudienceFallback: z.boolean(),
      events: z.boolean(),
      trustDomain: subdomain,
      controlPlaneNamespace: label,
      identityName: subdomain,
      certLifetime: positiveMs
        // Seconds-long lifetimes are for tests and drills of renewal; production uses hours.
        .min(5_000, 'must be at least 5s')
        .max(366 * 24 * 3_600_000, 'must be at most 8784h'),
      clockSkew: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      listen: address,
      admin: address,
      workers,
    })
    .superRefine((c, ctx) => {
      if (c.clockSkew >= c.certLifetime) {
        ctx.addIssue({
          code: 'custom',
          path: ['clockSkew'],
          message: 'must be less than certLifetime',
        });
      }
      try {
        parseIdentityName(c.identityName, c);
      } catch (err) {
        ctx.addIssue({ code: 'custom', path: ['identityName'], message: (err as Error).message });
      }
      caSourceProblems(c).forEach((p) => ctx.addIssue({ code: 'custom', ...p }));
    }),
  install: z.strictObject({
    ...commonShape,
    trustDomain: subdomain,
    controlPlaneNamespace: label,
    image: nonEmpty.regex(/^[^\s]+$/, 'must be an image reference without spaces'),
    replicas: z.number().int().min(1).max(100),
    trustAnchors: nonEmpty.optional(),
    issuerSecret: subdomain,
    trustAnchorsConfigMap: subdomain,
    trustAnchorsKey: nonEmpty.regex(/^[-._a-zA-Z0-9]+$/, 'must be a ConfigMap key'),
    tokenValidator: z.enum(['jwks', 'tokenreview']),
    certLifetime: positiveMs.min(5_000, 'must be at least 5s').max(366 * 24 * 3_600_000),
    clockSkew: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
    certManager: z.boolean(),
    certManagerIssuer: subdomain,
  }),
  proxy: z
    .strictObject({
      ...commonShape,
      identityAddr: nonEmpty.refine((a) => parseAddress(a) !== undefined, 'must be HOST:PORT'),
      identityName: subdomain,
      trustAnchors: nonEmpty,
      tokenFile: nonEmpty,
      localIdentity: subdomain,
      inbound: address.optional(),
      app: address.optional(),
      outbound: address.optional(),
      route: z.array(nonEmpty),
      destination: z.array(nonEmpty),
      admin: address,
      identityRetryMax: z.number().int().min(1000, 'must be at least 1s').max(3_600_000),
      allowIdentity: z.array(nonEmpty).optional(),
      allowServiceAccount: z.array(nonEmpty).optional(),
      allowNamespace: z.array(label).optional(),
      allowUnauthenticated: z.boolean(),
      appProtocol: z.array(
        nonEmpty.regex(
          /^(\d{1,5}=)?(http1|h2|detect|opaque)$/,
          'must be http1, h2, detect or opaque, optionally as PORT=PROTOCOL',
        ),
      ),
      appTimeout: z.number().int().min(0).max(3_600_000, 'must be at most 1h'),
      trustDomain: subdomain,
      controlPlaneNamespace: label,
    })
    .superRefine((c, ctx) => {
      if ((c.inbound === undefined) !== (c.app === undefined)) {
        ctx.addIssue({ code: 'custom', path: ['app'], message: 'is required with inbound' });
      }
    }),
  local: z.strictObject({
    ...commonShape,
    dir: nonEmpty,
    listen: address,
    admin: address,
    workers,
  }),
};

export type InitConfig = Readonly<z.infer<typeof SCHEMAS.init>>;
export type TokenConfig = Readonly<z.infer<typeof SCHEMAS.token>>;
export type CaConfig = Readonly<z.infer<typeof SCHEMAS.ca>>;
export type LocalConfig = Readonly<z.infer<typeof SCHEMAS.local>>;
export type InstallConfig = Readonly<z.infer<typeof SCHEMAS.install>>;
export type ProxyConfig = Readonly<z.infer<typeof SCHEMAS.proxy>>;
export interface CommandConfigs {
  init: InitConfig;
  token: TokenConfig;
  ca: CaConfig;
  local: LocalConfig;
  proxy: ProxyConfig;
  install: InstallConfig;
}

// ---- spelling ---------------------------------------------------------------------------------

/** `certLifetime` → `cert-lifetime`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `certLifetime` → `MESHID_CERT_LIFETIME`. */
export function envName(key: string): string {
  return `MESHID_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Every `MESHID_*` name some command knows, so that a typo is caught wherever it is set. */
const KNOWN_ENV = new Set(
  Object.values(COMMAND_SETTINGS).flatMap((s) => Object.keys(s).map(envName)),
);

// ---- loading ----------------------------------------------------------------------------------

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

function parseValue(kind: Kind, raw: unknown): { value?: unknown; error?: string } {
  switch (kind) {
    case 'string':
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
): { config: CommandConfigs[C] } {
  const settings: Record<string, Setting> = COMMAND_SETTINGS[command];
  const problems: Problem[] = [];
  const raw: Record<string, unknown> = {};
  const put = (key: string, value: unknown, where: string): void => {
    const setting = settings[key];
    if (setting === undefined) {
      problems.push({ field: where, message: `unknown setting for "meshid ${command}"` });
      return;
    }
    const parsed = parseValue(setting.kind, value);
    if (parsed.error !== undefined) problems.push({ field: where, message: parsed.error });
    else raw[key] = parsed.value;
  };

  // Flags are parsed first (to find --config) but applied last.
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [key, s] of Object.entries(settings)) {
    options[flagName(key)] =
      s.kind === 'list'
        ? { type: 'string', multiple: true }
        : { type: s.kind === 'boolean' ? 'boolean' : 'string' };
  }
  const flags = parseFlags(command, sources.argv, options);

  const configPath = (flags['config'] as string | undefined) ?? sources.env[envName('config')];
  if (configPath !== undefined && configPath !== '') {
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
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) {
        problems.push({ field: configPath, message: 'must be a mapping of settings' });
      } else {
        for (const [key, value] of Object.entries(doc)) {
          if (key === 'config')
            problems.push({
              field: `${configPath}: config`,
              message: 'cannot be set in a config file',
            });
          else put(key, value, `${configPath}: ${key}`);
        }
      }
    }
  }

  for (const [name, value] of Object.entries(sources.env)) {
    if (!name.startsWith('MESHID_') || value === undefined) continue;
    const key = Object.keys(settings).find((k) => envName(k) === name);
    if (key === undefined) {
      if (!KNOWN_ENV.has(name))
        problems.push({ field: name, message: 'unknown MESHID_ environment variable' });
      continue;
    }
    if (key !== 'config') put(key, value, name);
  }

  for (const [flag, value] of Object.entries(flags)) {
    if (value === undefined || flag === 'config') continue;
    const key = Object.keys(settings).find((k) => flagName(k) === flag)!;
    put(key, value, `--${flag}`);
  }

  if (raw['fips'] === true) {
    // The setting exists so that configurations can carry it; until FIPS mode is enforced
    // (approved algorithms only, a FIPS provider asserted at start) it must not be accepted
    // and silently ignored.
    problems.push({
      field: 'fips (--fips, MESHID_FIPS)',
      message:
        'FIPS mode is not implemented in this release; meshid refuses to run in a mode it cannot enforce',
    });
  }
  if (problems.length > 0) throw configError(command, problems);
  const merged = applyDefaults(command, raw);
  const result = SCHEMAS[command].safeParse(merged);
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
  return { config: deepFreeze(result.data) as CommandConfigs[C] };
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
  options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>,
): Record<string, unknown> {
  try {
    return parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new MeshidError('ERR_CONFIG_INVALID', `meshid ${command}: ${(err as Error).message}`);
  }
}

function configError(command: string, problems: readonly Problem[]): MeshidError {
  const lines = problems.map((p) => `  ${p.field}: ${p.message}`).join('\n');
  return new MeshidError(
    'ERR_CONFIG_INVALID',
    `invalid configuration for "meshid ${command}" (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${lines}`,
  );
}

/**
 * Fills defaults. For `ca`, the local state folder stands in for the four inputs that `meshid
 * init` writes when none of them is given; given ones override the folder's.
 */
function applyDefaults(
  command: CommandName,
  raw: Record<string, unknown>,
): Record<string, unknown> {
  const d = DEFAULTS;
  const withCommon = { logLevel: d.logLevel, fips: false, ...raw };
  switch (command) {
    case 'init':
      return {
        dir: d.stateDir,
        force: false,
        trustDomain: d.trustDomain,
        controlPlaneNamespace: d.controlPlaneNamespace,
        ...withCommon,
      };
    case 'token':
      return { dir: d.stateDir, ttl: d.tokenTtlMs, audience: d.audience, ...withCommon };
    case 'local':
      return { dir: d.stateDir, listen: d.caListen, admin: d.caAdmin, workers: 0, ...withCommon };
    case 'proxy':
      return {
        admin: d.proxyAdmin,
        route: [],
        destination: [],
        identityRetryMax: 60_000,
        appProtocol: [],
        appTimeout: 60_000,
        // The listeners exist when what they serve is configured, on their default ports.
        ...('app' in raw && !('inbound' in raw) ? { inbound: d.proxyInbound } : {}),
        ...('destination' in raw && !('outbound' in raw) ? { outbound: d.proxyOutbound } : {}),
        allowUnauthenticated: false,
        trustDomain: d.trustDomain,
        controlPlaneNamespace: d.controlPlaneNamespace,
        ...withCommon,
      };
    case 'install':
      return {
        trustDomain: d.trustDomain,
        controlPlaneNamespace: d.controlPlaneNamespace,
        image: d.image,
        replicas: d.installReplicas,
        issuerSecret: d.issuerSecret,
        trustAnchorsConfigMap: d.trustAnchorsConfigMap,
        trustAnchorsKey: d.trustAnchorsKey,
        tokenValidator: 'tokenreview',
        certLifetime: d.certLifetimeMs,
        clockSkew: d.clockSkewMs,
        certManager: false,
        certManagerIssuer: d.certManagerIssuer,
        ...withCommon,
      };
    case 'ca': {
      const explicit = CA_INPUTS.some((k) => k in raw);
      const dir = (raw['dir'] as string | undefined) ?? (explicit ? undefined : d.stateDir);
      const fromDir = dir === undefined ? {} : caInputsFromDir(dir);
      const trustDomain = (raw['trustDomain'] as string | undefined) ?? d.trustDomain;
      const controlPlaneNamespace =
        (raw['controlPlaneNamespace'] as string | undefined) ?? d.controlPlaneNamespace;
      const naming = { trustDomain, controlPlaneNamespace };
      const jwks = raw['jwks'] ?? ('jwks' in fromDir ? fromDir['jwks'] : undefined);
      const tokenValidator = raw['tokenValidator'] ?? (jwks === undefined ? 'tokenreview' : 'jwks');
      // The Kubernetes API is needed for TokenReview, the cluster's JWKS, and the issuer and
      // anchors as API objects; inside a pod the service account's credentials reach it.
      const needsKube =
        tokenValidator === 'tokenreview' ||
        jwks === KUBERNETES_JWKS ||
        'issuerSecret' in raw ||
        'trustAnchorsConfigMap' in raw;
      return {
        ...fromDir,
        tokenValidator,
        ...(needsKube ? { kubeconfig: IN_CLUSTER } : {}),
        namespace: controlPlaneNamespace,
        trustAnchorsKey: d.trustAnchorsKey,
        tokenReviewCacheTtl: d.tokenReviewCacheTtlMs,
        tokenReviewCacheSize: d.tokenReviewCacheSize,
        tokenReviewUnsafeNoAudienceFallback: false,
        events: true,
        audience: d.audience,
        certLifetime: d.certLifetimeMs,
        clockSkew: d.clockSkewMs,
        listen: d.caListen,
        admin: d.caAdmin,
        workers: 0,
        trustDomain,
        controlPlaneNamespace,
        identityName: namingProblems(naming).length === 0 ? caIdentityName(naming) : 'invalid',
        ...(dir === undefined ? {} : { dir }),
        ...withCommon,
      };
    }
  }
}

/**
 * The four CA inputs inside a local state folder (the layout `meshid init` writes).
 *
 * @example
 * ```ts
 * localStateInputs('.meshid').issuerDir; // '.meshid/issuer'
 * ```
 */
export function localStateInputs(dir: string): {
  trustAnchors: string;
  issuerDir: string;
  jwks: string;
  tokenIssuer: string;
  tokenSigningKey: string;
} {
  return {
    trustAnchors: `${dir}/trust-anchors.pem`,
    issuerDir: `${dir}/issuer`,
    jwks: `${dir}/token-signing/jwks.json`,
    tokenSigningKey: `${dir}/token-signing/key.pem`,
    tokenIssuer: DEFAULTS.localTokenIssuer,
  };
}

/** Settings that name the CA's inputs; when none is given, the local state folder supplies them. */
const CA_INPUTS = [
  'trustAnchors',
  'issuerDir',
  'jwks',
  'tokenIssuer',
  'issuerSecret',
  'trustAnchorsConfigMap',
  'tokenValidator',
  'kubeconfig',
];

/** `--kubeconfig in-cluster`: the pod's service account token and the cluster's CA. */
export const IN_CLUSTER = 'in-cluster';

/** `--jwks kubernetes`: the API server's OIDC discovery document and its JWKS. */
export const KUBERNETES_JWKS = 'kubernetes';

/** Where the CA's issuer, anchors and token keys come from, checked as a whole. */
function caSourceProblems(c: {
  trustAnchors?: string | undefined;
  issuerDir?: string | undefined;
  issuerSecret?: string | undefined;
  trustAnchorsConfigMap?: string | undefined;
  tokenValidator: 'jwks' | 'tokenreview';
  jwks?: string | undefined;
  jwksCa?: string | undefined;
  tokenIssuer?: string | undefined;
}): { path: string[]; message: string }[] {
  const problems: { path: string[]; message: string }[] = [];
  const both = (a: keyof typeof c, b: keyof typeof c): void => {
    if (c[a] !== undefined && c[b] !== undefined)
      problems.push({ path: [b], message: `cannot be combined with ${a}: choose one source` });
    if (c[a] === undefined && c[b] === undefined)
      problems.push({ path: [a], message: `is required (or ${b})` });
  };
  both('issuerDir', 'issuerSecret');
  both('trustAnchors', 'trustAnchorsConfigMap');
  // Issuer and anchors are validated as a pair, so they come from the same kind of source: both
  // API objects (watched), or both mounted files.
  if ((c.issuerSecret === undefined) !== (c.trustAnchorsConfigMap === undefined)) {
    const missing = c.issuerSecret === undefined ? 'issuerSecret' : 'trustAnchorsConfigMap';
    if (c[missing === 'issuerSecret' ? 'issuerDir' : 'trustAnchors'] !== undefined)
      problems.push({
        path: [missing],
        message:
          'is required: the issuer Secret and the anchors ConfigMap are read together through the API (or use issuerDir with trustAnchors)',
      });
  }
  if (c.tokenValidator === 'jwks') {
    if (c.jwks === undefined)
      problems.push({ path: ['jwks'], message: 'is required with tokenValidator jwks' });
    else if (/^https?:/i.test(c.jwks) && !/^https?:\/\/[^/]/i.test(c.jwks))
      problems.push({ path: ['jwks'], message: 'is not a valid URL' });
    // The cluster's discovery document names its issuer; any other JWKS needs it spelled out.
    if (c.tokenIssuer === undefined && c.jwks !== KUBERNETES_JWKS)
      problems.push({ path: ['tokenIssuer'], message: 'is required with tokenValidator jwks' });
  } else {
    for (const k of ['jwks', 'jwksCa', 'tokenIssuer'] as const) {
      if (c[k] !== undefined)
        problems.push({ path: [k], message: 'applies only with tokenValidator jwks' });
    }
  }
  return problems;
}

function caInputsFromDir(dir: string): Record<string, string> {
  const { trustAnchors, issuerDir, jwks, tokenIssuer } = localStateInputs(dir);
  return { trustAnchors, issuerDir, jwks, tokenIssuer };
}

/** The CA's own identity name: `linkerd-identity.<cp>.serviceaccount.identity.<cp>.<td>`. */
export function caIdentityName(naming: {
  trustDomain: string;
  controlPlaneNamespace: string;
}): string {
  const cp = naming.controlPlaneNamespace;
  return `linkerd-identity.${cp}.serviceaccount.identity.${cp}.${naming.trustDomain}`;
}

/**
 * One line per setting for `--help`.
 *
 * @example
 * ```ts
 * settingsHelp('ca'); // '  --trust-anchors  (MESHID_TRUST_ANCHORS)  PEM bundle of trust anchors\n...'
 * ```
 */
export function settingsHelp(command: CommandName): string {
  return Object.entries(COMMAND_SETTINGS[command] as Record<string, Setting>)
    .map(([k, s]) => `  --${flagName(k).padEnd(26)} ${envName(k).padEnd(34)} ${s.help}`)
    .join('\n');
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
