/**
 * `meshid`: the only composition root. Parses the configuration, builds the dependencies
 * (logger, clock, randomness) and dispatches to the components.
 */
import { didYouMean, isMeshidError, versionInfo } from '../core/index.js';
import type { CommandName } from '../core/index.js';
import { commandHelp } from './help.js';

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
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length)) + 1;
  const lines = Object.entries(COMMANDS).map(
    ([name, c]) => `  meshid ${name.padEnd(width)} ${c.summary}`,
  );
  return (
    `meshid: workload-identity CA for Kubernetes service meshes\n\nUsage:\n${lines.join('\n')}\n\n` +
    `'meshid help <command>' or 'meshid <command> --help' lists a command's flags and their defaults;\n` +
    `'meshid --version' prints the version.\n`
  );
}

function lookup(name: string): CommandName | undefined {
  return Object.hasOwn(COMMANDS, name) ? (name as CommandName) : undefined;
}

function unknownCommand(name: string): number {
  process.stderr.write(
    `meshid: unknown command "${name}"${didYouMean(name, Object.keys(COMMANDS))}\n\n${usage()}`,
  );
  return 2;
}

function help(name: CommandName): number {
  process.stdout.write(commandHelp(name, COMMANDS[name].summary));
  return 0;
}

/**
 * Runs the CLI; resolves with the process exit code.
 */
export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    process.stderr.write(usage());
    return 2;
  }
  if (first === '--version' || first === '-V') {
    const v = versionInfo();
    process.stdout.write(`meshid ${v.version} (Node.js ${v.node}, OpenSSL ${v.openssl})\n`);
    return 0;
  }
  if (first === 'help' || first === '--help' || first === '-h') {
    const topic = rest[0];
    if (topic === undefined) {
      process.stdout.write(usage());
      return 0;
    }
    const named = lookup(topic);
    return named === undefined ? unknownCommand(topic) : help(named);
  }
  const name = lookup(first);
  if (name === undefined) return unknownCommand(first);
  if (rest.includes('--help') || rest.includes('-h')) return help(name);
  try {
    return await COMMANDS[name].run(rest);
  } catch (err) {
    if (isMeshidError(err)) {
      // One prefix: a message that already names its command is printed as it is.
      const prefix = err.message.startsWith(`meshid ${name}`) ? '' : `meshid ${name}: `;
      process.stderr.write(`${prefix}${err.message} [${err.code}]\n`);
      return err.code === 'ERR_CONFIG_INVALID' ? 2 : 1;
    }
    process.stderr.write(
      `meshid ${name}: unexpected failure: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return 1;
  }
}
