/**
 * `meshid trust ...`: the trust-bundle commands.
 *
 *   meshid trust validate FILE      exit 0 and a summary, or non-zero naming each bad certificate
 *   meshid trust manifests          the cert-manager (and trust-manager) resources as YAML
 *   meshid trust rotate | status | pause | resume | rollback   [--kubeconfig F | --dir D]
 *   meshid trust sync               the sync controller, for clusters without trust-manager
 */
import { readFile } from 'node:fs/promises';
import { MeshidError, loadConfig, systemClock } from '../core/index.js';
import type { TrustConfig } from '../core/index.js';
import { parseBundle } from '../trust-bundle/index.js';

/** The `meshid trust` subcommands. */
export const TRUST_SUBCOMMANDS = [
  'validate',
  'manifests',
  'rotate',
  'status',
  'pause',
  'resume',
  'rollback',
  'sync',
] as const;
type Subcommand = (typeof TRUST_SUBCOMMANDS)[number];

const USAGE = `Usage:
  meshid trust validate FILE
  meshid trust manifests [--trust-manager] [--namespace NS]
  meshid trust rotate|status|pause|resume|rollback [--dir D | --kubeconfig F]
  meshid trust sync [--kubeconfig F]
'meshid trust --help' lists the settings.
`;

/** Output of a subcommand: what to print, and the exit code. */
export interface TrustOutput {
  readonly stdout: string;
  readonly code: number;
}

/**
 * `meshid trust validate FILE`: parses the bundle with every anchor check and summarises it.
 *
 * @example
 * ```ts
 * const out = await validateBundleFile('ca-bundle.crt', config, Date.now());
 * ```
 */
export async function validateBundleFile(
  file: string,
  config: Pick<TrustConfig, 'warnWithin' | 'output'>,
  now: number,
): Promise<TrustOutput> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new MeshidError(
      'ERR_ANCHORS_INVALID',
      `${file}: cannot read: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  let bundle;
  try {
    bundle = parseBundle(text, { now, warnWithin: config.warnWithin });
  } catch (err) {
    if (err instanceof MeshidError) {
      throw new MeshidError(err.code, `${file}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  if (config.output === 'json') {
    const doc = {
      file,
      valid: true,
      fingerprint: bundle.fingerprint,
      canonical: bundle.pem === text,
      earliestNotAfter: new Date(bundle.earliestNotAfter).toISOString(),
      anchors: bundle.anchors.map((a) => ({
        subject: a.subject,
        keyType: a.keyType,
        notBefore: new Date(a.notBefore).toISOString(),
        notAfter: new Date(a.notAfter).toISOString(),
        sha256: a.fingerprint,
      })),
      warnings: bundle.warnings,
    };
    return { stdout: `${JSON.stringify(doc, null, 2)}\n`, code: 0 };
  }
  const lines = [
    `${file}: valid trust bundle, ${bundle.anchors.length} anchor${bundle.anchors.length === 1 ? '' : 's'} (bundle sha256 ${bundle.fingerprint})`,
    ...bundle.anchors.map(
      (a, i) =>
        `  ${i + 1}. ${a.subject}  ${a.keyType}  valid ${new Date(a.notBefore).toISOString()} to ${new Date(a.notAfter).toISOString()}  sha256 ${a.fingerprint.slice(0, 16)}…`,
    ),
    `  earliest expiry: ${new Date(bundle.earliestNotAfter).toISOString()}`,
    ...(bundle.pem === text
      ? []
      : [
          '  note: not in canonical form (order or layout differ); the controllers write the canonical form',
        ]),
    ...bundle.warnings.map((w) => `  warning: ${w}`),
  ];
  return { stdout: `${lines.join('\n')}\n`, code: 0 };
}

function splitArgs(argv: readonly string[]): {
  sub: Subcommand | undefined;
  positionals: string[];
  flags: string[];
} {
  const [first, ...rest] = argv;
  const sub = (TRUST_SUBCOMMANDS as readonly string[]).includes(first ?? '')
    ? (first as Subcommand)
    : undefined;
  const positionals: string[] = [];
  const flags: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a.startsWith('-')) {
      flags.push(a);
      // A value-taking flag given as two words: keep its value with it.
      if (!a.includes('=') && i + 1 < rest.length && !rest[i + 1]!.startsWith('-')) {
        if (!BOOLEAN_FLAGS.has(a)) flags.push(rest[++i]!);
      }
    } else {
      positionals.push(a);
    }
  }
  return { sub, positionals, flags };
}

const BOOLEAN_FLAGS = new Set(['--fips', '--trust-manager', '--once']);

/** `meshid trust` */
export async function runTrust(argv: string[]): Promise<number> {
  const { sub, positionals, flags } = splitArgs(argv);
  if (sub === undefined) {
    process.stderr.write(
      `meshid trust: ${argv[0] === undefined ? 'a subcommand is required' : `unknown subcommand "${argv[0]}"`}\n${USAGE}`,
    );
    return 2;
  }
  const wantsFile = sub === 'validate';
  if (wantsFile ? positionals.length !== 1 : positionals.length !== 0) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      wantsFile
        ? `meshid trust validate: exactly one FILE is required\n${USAGE}`
        : `meshid trust ${sub}: unexpected argument "${positionals[0]}"\n${USAGE}`,
    );
  }
  const { config } = loadConfig('trust', { argv: flags, env: process.env });
  const out = await runSubcommand(sub, positionals, config);
  await new Promise<void>((resolve, reject) =>
    process.stdout.write(out.stdout, (err) => (err ? reject(err) : resolve())),
  );
  return out.code;
}

async function runSubcommand(
  sub: Subcommand,
  positionals: readonly string[],
  config: TrustConfig,
): Promise<TrustOutput> {
  switch (sub) {
    case 'validate':
      return validateBundleFile(positionals[0]!, config, systemClock.now());
    default:
      throw new MeshidError('ERR_CONFIG_INVALID', `meshid trust ${sub}: not available yet`);
  }
}
