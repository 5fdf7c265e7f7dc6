/**
 * `meshid trust ...`: the trust-bundle commands.
 *
 *   meshid trust validate FILE      exit 0 and a summary, or non-zero naming each bad certificate
 *   meshid trust manifests          the cert-manager (and trust-manager) resources as YAML
 *   meshid trust rotate | status | pause | resume | rollback   [--kubeconfig F | --dir D]
 *   meshid trust sync               the sync controller, for clusters without trust-manager
 */
import { readFile } from 'node:fs/promises';
import { createPrivateKey } from 'node:crypto';
import { hostname } from 'node:os';
import {
  MeshidError,
  createLogger,
  didYouMean,
  loadConfig,
  parseAnchors,
  parsePem,
  systemClock,
  systemRandom,
} from '../core/index.js';
import type { Clock, Logger, TrustConfig } from '../core/index.js';
import { createIntermediateCa, createRootCa } from '../core/pki.js';
import {
  LocalRotationBackend,
  RotationController,
  adminUrlObserver,
  formatRotationStatus,
  progressLine,
  rotationInProgress,
} from '../trust-bundle/index.js';
import type { RotationState } from '../trust-bundle/index.js';
import { caAddressObserver, kubeTrustSettings } from './trust-kube.js';
import type { OpenedRotation, RotationOptions } from './trust-kube.js';
import { LOCAL_ISSUER_LIFETIME_MS, LOCAL_ROOT_LIFETIME_MS } from './init.js';
import { certManagerChain } from './install/manifest.js';
import { TRUST_USAGE } from './help.js';
import { manifestYaml } from './install/yaml.js';
import { logFormat, startCrypto } from './runtime.js';

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

const USAGE = `${TRUST_USAGE}'meshid trust --help' lists the settings.
`;

/** Output of a subcommand: what to print, and the exit code. */
interface TrustOutput {
  readonly stdout: string;
  readonly code: number;
}

/**
 * `meshid trust validate FILE`: parses the bundle with every anchor check and summarises it.
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
    bundle = parseAnchors(text, { now, warnWithin: config.warnWithin });
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

/**
 * `meshid trust manifests`: the cert-manager chain (and the trust-manager Bundle with
 * --trust-manager) as YAML, the same objects `meshid install --cert-manager` renders.
 */
export function renderTrustManifests(config: TrustConfig): string {
  return manifestYaml(
    certManagerChain(kubeTrustSettings(config), config.trustManager),
    'Rendered by `meshid trust manifests`; apply with `kubectl apply -f -`. See docs/rotation.md.',
  );
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
      `meshid trust: ${argv[0] === undefined ? 'a subcommand is required' : `unknown subcommand "${argv[0]}"${didYouMean(argv[0], TRUST_SUBCOMMANDS)}`}\n${USAGE}`,
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
  startCrypto(config);
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
    case 'manifests':
      return { stdout: renderTrustManifests(config), code: 0 };
    case 'status':
    case 'rotate':
    case 'pause':
    case 'resume':
    case 'rollback':
      return runRotationCommand(sub, config, (text) => process.stdout.write(text));
    case 'sync':
      return runSyncCommand(config);
  }
}

async function runSyncCommand(config: TrustConfig): Promise<TrustOutput> {
  if (config.kubeconfig === undefined) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      'meshid trust sync: --kubeconfig is required (the sync controller keeps the anchors ConfigMap of a cluster)',
    );
  }
  const logger = createLogger({ level: config.logLevel, format: logFormat(config.logFormat) });
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const { runSync } = await import('./trust-kube.js');
    const stdout = await runSync(config, rotationOptions(config, logger, systemClock), stop.signal);
    return { stdout, code: 0 };
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

function rotationOptions(config: TrustConfig, logger: Logger, clock: Clock): RotationOptions {
  return {
    clock,
    random: systemRandom,
    logger,
    leafLifetime: config.certLifetime,
    clockSkew: config.clockSkew,
    waitTimeout: config.propagateTimeout,
    holder: `${hostname()}/${process.pid}`,
  };
}

/**
 * Builds the rotation controller of `--dir` (local files) or `--kubeconfig` (the API and
 * cert-manager).
 */
async function openRotation(
  config: TrustConfig,
  logger: Logger,
  clock: Clock = systemClock,
): Promise<OpenedRotation> {
  if ((config.dir === undefined) === (config.kubeconfig === undefined)) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      'meshid trust: give exactly one of --dir D (local files) or --kubeconfig F (a cluster)',
    );
  }
  const options = rotationOptions(config, logger, clock);
  if (config.dir !== undefined) {
    const dir = config.dir;
    const backend = new LocalRotationBackend({
      dir,
      createRoot: (commonName) =>
        createRootCa({
          commonName,
          notBefore: clock.now() - 60_000,
          notAfter: clock.now() + LOCAL_ROOT_LIFETIME_MS,
        }),
      createIssuer: (root, commonName) =>
        createIntermediateCa({
          issuer: {
            certificateDer: parsePem(root.certificatePem, 'CERTIFICATE')[0]!.der,
            privateKey: createPrivateKey(root.privateKeyPem),
          },
          commonName,
          notBefore: clock.now() - 60_000,
          notAfter: clock.now() + LOCAL_ISSUER_LIFETIME_MS,
          pathLength: 0,
        }),
    });
    const controller = new RotationController({
      ...options,
      backend,
      observer: adminUrlObserver(config.proxyAdmin),
      ...(config.caAddress.length === 0 ? {} : { caObserver: caAddressObserver(config) }),
    });
    return { controller, where: dir, close: () => undefined };
  }
  const { openKubeRotation } = await import('./trust-kube.js');
  return openKubeRotation(config, options);
}

/**
 * `meshid trust rotate|status|pause|resume|rollback`. `print` receives progress as it happens.
 */
async function runRotationCommand(
  sub: 'rotate' | 'status' | 'pause' | 'resume' | 'rollback',
  config: TrustConfig,
  print: (text: string) => void,
  clock: Clock = systemClock,
): Promise<TrustOutput> {
  const logger = createLogger({
    level: config.logLevel,
    destination: process.stderr,
    format: logFormat(config.logFormat, true),
  });
  const opened = await openRotation(config, logger, clock);
  const { controller } = opened;
  const show = (state: RotationState | undefined): string =>
    config.output === 'json'
      ? `${JSON.stringify(state ?? null, null, 2)}\n`
      : formatRotationStatus(state, clock.now());
  try {
    switch (sub) {
      case 'status':
        return { stdout: show(await controller.status()), code: 0 };
      case 'pause':
        return { stdout: show(await controller.setPaused(true)), code: 0 };
      case 'resume':
        return { stdout: show(await controller.setPaused(false)), code: 0 };
      case 'rollback':
        return { stdout: show(await controller.rollback()), code: 0 };
      case 'rotate':
        return await rotate(controller, config, print, clock);
    }
  } finally {
    opened.close();
  }
}

async function rotate(
  controller: RotationController,
  config: TrustConfig,
  print: (text: string) => void,
  clock: Clock,
): Promise<TrustOutput> {
  const current = await controller.status();
  if (current === undefined || !rotationInProgress(current)) {
    const started = await controller.start();
    print(`meshid trust rotate: started rotation ${started.id} from ${started.oldRoot.subject}\n`);
  } else {
    if (current.paused) {
      throw new MeshidError(
        'ERR_ROTATION_REFUSED',
        `rotation ${current.id} is paused in phase ${current.phase}; run meshid trust resume first`,
      );
    }
    print(`meshid trust rotate: continuing rotation ${current.id} in phase ${current.phase}\n`);
  }
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let last = '';
  const report = (state: RotationState | undefined): void => {
    if (state === undefined) return;
    const line = `${state.phase}${state.paused ? ' (paused)' : ''}: ${
      state.waitingFor?.description ?? PHASE_TEXT[state.phase]
    }${state.lastError === undefined ? '' : ` [holding: ${state.lastError}]`}`;
    if (line !== last) print(`  ${progressLine(state)}  ${line}\n`);
    last = line;
  };
  try {
    await controller.run({
      interval: config.interval,
      signal: stop.signal,
      once: config.once,
      onStep: (r) => report(r.state),
    });
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
  const state = await controller.status();
  const finished = state !== undefined && !rotationInProgress(state);
  return {
    stdout: finished
      ? formatRotationStatus(state, clock.now())
      : `stopped in phase ${state?.phase ?? '?'}; the state is saved: run meshid trust rotate again to continue\n`,
    code: 0,
  };
}

const PHASE_TEXT: Record<RotationState['phase'], string> = {
  stage: 'making the new root',
  propagate: 'new root staged beside the old one',
  switch: 'every observed proxy has the staged bundle; re-issuing the issuer from the new root',
  drain: 'the issuer chains to the new root',
  retire: 'no live leaf chains to the old root any more',
  done: 'old root retired',
  'rolled-back': 'rolled back',
};
