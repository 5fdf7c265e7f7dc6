/**
 * `meshid`: the only composition root. Parses the configuration, builds the dependencies
 * (logger, clock, randomness) and dispatches to the components.
 */
import { isMeshidError, settingsHelp } from '../core/index.js';
import type { CommandName } from '../core/index.js';

// Each command's modules are loaded only when it runs: a sidecar proxy must not carry the CA's
// X.509 builders and their dependencies in its memory (about 40 MB of a node process).
const runInit = async (argv: string[]): Promise<number> =>
  (await import('./init.js')).runInit(argv);
const runToken = async (argv: string[]): Promise<number> =>
  (await import('./token.js')).runToken(argv);
const runCa = async (argv: string[]): Promise<number> => (await import('./ca.js')).runCa(argv);
const runProxy = async (argv: string[]): Promise<number> =>
  (await import('./proxy.js')).runProxy(argv);
const runProxyInit = async (argv: string[]): Promise<number> =>
  (await import('./proxy-init.js')).runProxyInit(argv);
const runLocal = async (argv: string[]): Promise<number> =>
  (await import('./local.js')).runLocal(argv);
const runWebhooks = async (argv: string[]): Promise<number> =>
  (await import('./webhooks.js')).runWebhooks(argv);
const runCheck = async (argv: string[]): Promise<number> =>
  (await import('./check.js')).runCheck(argv);
const runIdentity = async (argv: string[]): Promise<number> =>
  (await import('./identity.js')).runIdentity(argv);
const runVersion = async (argv: string[]): Promise<number> =>
  (await import('./version.js')).runVersion(argv);
const runDestination = async (argv: string[]): Promise<number> =>
  (await import('./destination.js')).runDestination(argv);
const runInstall = async (argv: string[]): Promise<number> =>
  (await import('./install.js')).runInstall(argv);

const runTrust = async (argv: string[]): Promise<number> =>
  (await import('./trust.js')).runTrust(argv);

const COMMANDS: Record<CommandName, { summary: string; run: (argv: string[]) => Promise<number> }> =
  {
    init: {
      summary: 'write a fresh trust anchor, issuer and token-signing key into a state folder',
      run: runInit,
    },
    token: {
      summary: 'print a ServiceAccount token signed by the local key (development only)',
      run: runToken,
    },
    ca: { summary: 'run the identity CA (Certify over gRPC/TLS, admin HTTP)', run: runCa },
    proxy: {
      summary: 'run the sidecar proxy: identity from the CA, inbound and outbound TLS 1.3 mTLS',
      run: runProxy,
    },
    'proxy-init': {
      summary:
        "write the pod's iptables nat rules for transparent mode (the injected init container)",
      run: runProxyInit,
    },
    local: {
      summary:
        'the embedded default: init if needed, then the CA and a two-service mesh on 127.0.0.1',
      run: runLocal,
    },
    webhooks: {
      summary: 'serve the admission webhooks over HTTPS: the proxy injector and the trust guard',
      run: runWebhooks,
    },
    destination: {
      summary:
        "serve Linkerd's Destination API over mTLS: endpoints, identities and protocol hints from the cluster's Services, EndpointSlices and Pods",
      run: runDestination,
    },
    install: {
      summary:
        'print the YAML of an in-cluster install (RBAC, Deployment, Services) for kubectl apply',
      run: runInstall,
    },
    check: {
      summary: 'check the install (--kubeconfig) or the local state (--dir): ✓ ‼ × and what to do',
      run: runCheck,
    },
    identity: {
      summary: 'inspect a certificate: FILE, --secret NS/NAME or --proxy ADMIN_ADDR',
      run: runIdentity,
    },
    version: {
      summary: "print meshid's, Node's and OpenSSL's versions, FIPS status, the CA's version",
      run: runVersion,
    },
    trust: {
      summary:
        'trust anchors: validate a bundle, cert-manager manifests, sync, and automated root rotation',
      run: runTrust,
    },
  };

function usage(): string {
  const lines = Object.entries(COMMANDS).map(
    ([name, c]) => `  meshid ${name.padEnd(10)} ${c.summary}`,
  );
  return `meshid: workload-identity CA for Kubernetes service meshes\n\nUsage:\n${lines.join('\n')}\n\n'meshid <command> --help' lists a command's settings.\n`;
}

/**
 * Runs the CLI; resolves with the process exit code.
 *
 * @example
 * ```ts
 * process.exitCode = await main(process.argv.slice(2));
 * ```
 */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const command = Object.hasOwn(COMMANDS, name)
    ? COMMANDS[name as keyof typeof COMMANDS]
    : undefined;
  if (command === undefined) {
    process.stderr.write(`meshid: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(
      `meshid ${name}: ${command.summary}\n\nSettings (flag, environment variable, and the camelCase key in a --config file):\n${settingsHelp(name as CommandName)}\n`,
    );
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (isMeshidError(err)) {
      process.stderr.write(`meshid ${name}: ${err.message} [${err.code}]\n`);
      return err.code === 'ERR_CONFIG_INVALID' ? 2 : 1;
    }
    process.stderr.write(
      `meshid ${name}: unexpected failure: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  }
}
