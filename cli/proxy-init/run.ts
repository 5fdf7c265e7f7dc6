/**
 * `meshid proxy-init`: writes the pod's nat rules (rules.ts) with the iptables back end the pod
 * uses, or prints them (`--dry-run`). Runs as the injected init container, root with NET_ADMIN
 * and NET_RAW and nothing else; refuses up front, naming what is missing, when a capability or
 * the iptables binary is not there.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants, readFileSync, realpathSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Cidr, Logger, PortRange, ProxyInitConfig } from '../../core/index.js';
import { MeshidError, parseCidrList, parsePortList } from '../../core/index.js';
import type { ProxyInitSettings } from './rules.js';
import { restoreInput } from './rules.js';

type IptablesBackend = 'legacy' | 'nft';

/**
 * The settings of the rules from the command's configuration, or ERR_CONFIG_INVALID naming
 * every bad flag.
 */
function proxyInitSettings(config: ProxyInitConfig): ProxyInitSettings {
  const problems: string[] = [];
  const ports = (flag: string, values: readonly string[]): PortRange[] => {
    const r = parsePortList(values.join(','));
    if ('problem' in r) {
      problems.push(`--${flag}: ${r.problem}`);
      return [];
    }
    return r.ranges;
  };
  const skipInbound = ports('skip-inbound-ports', config.skipInboundPorts);
  const skipOutbound = ports('skip-outbound-ports', config.skipOutboundPorts);
  let subnets: Cidr[] = [];
  const c = parseCidrList(config.skipSubnets.join(','));
  if ('problem' in c) problems.push(`--skip-subnets: ${c.problem}`);
  else subnets = c.cidrs;
  if (problems.length > 0) {
    throw new MeshidError(
      'ERR_CONFIG_INVALID',
      `invalid configuration for "meshid proxy-init":\n  ${problems.join('\n  ')}`,
    );
  }
  const own = [config.inboundPort, config.adminPort].map((p) => ({ from: p, to: p }));
  return {
    inboundPort: config.inboundPort,
    outboundPort: config.outboundPort,
    proxyUid: config.proxyUid,
    skipInboundPorts: [...own, ...skipInbound],
    skipOutboundPorts: skipOutbound,
    skipSubnets: subnets,
  };
}

/** The capabilities proxy-init needs, by bit number in /proc/self/status CapEff. */
const NEEDED_CAPABILITIES = [
  ['NET_ADMIN', 12],
  ['NET_RAW', 13],
] as const;

/** The needed capabilities this process lacks (read from /proc/self/status). */
function missingCapabilities(status = readFileSync('/proc/self/status', 'utf8')): string[] {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  const eff = BigInt(`0x${hex}`);
  return NEEDED_CAPABILITIES.filter(([, bit]) => (eff & (1n << BigInt(bit))) === 0n).map(
    ([name]) => name,
  );
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(file: string, args: readonly string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { encoding: 'utf8', timeout: 30_000 },
      (err, stdout, stderr) =>
        resolve({
          code: err === null ? 0 : typeof err.code === 'number' ? err.code : 127,
          stdout,
          stderr: stderr || (err?.message ?? ''),
        }),
    );
    // A command that reads nothing (the save commands) may be gone before its stdin is closed.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

function binaries(backend: IptablesBackend, family: 4 | 6): { save: string; restore: string } {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  return { save: `${base}-${backend}-save`, restore: `${base}-${backend}-restore` };
}

function countRules(save: string): number {
  return save.split('\n').filter((l) => l.startsWith('-A ')).length;
}

/**
 * Which back end to use. `auto`, as Kubernetes' iptables wrapper decides: the one that already
 * holds rules in this network namespace (a CNI's, or proxy-init's own from an earlier run),
 * else the one the `iptables` command is.
 */
async function chooseBackend(mode: ProxyInitConfig['iptablesMode']): Promise<IptablesBackend> {
  const available = (b: IptablesBackend): boolean =>
    onPath(binaries(b, 4).save) !== undefined && onPath(binaries(b, 4).restore) !== undefined;
  if (mode !== 'auto') {
    if (!available(mode)) {
      const { save, restore } = binaries(mode, 4);
      throw new MeshidError(
        'ERR_PROXY_INIT',
        `meshid proxy-init: ${save} and ${restore} are not on the PATH (--iptables-mode ${mode}); install iptables (Debian package "iptables") in the image, or choose the other mode`,
      );
    }
    return mode;
  }
  const candidates = (['nft', 'legacy'] as const).filter(available);
  if (candidates.length === 0) {
    throw new MeshidError(
      'ERR_PROXY_INIT',
      'meshid proxy-init: no iptables binary on the PATH (iptables-nft-save/-restore or iptables-legacy-save/-restore); install iptables (Debian package "iptables") in the image',
    );
  }
  const counts = await Promise.all(
    candidates.map(async (b) => {
      const r = await run(binaries(b, 4).save, ['-t', 'nat']);
      return { b, rules: r.code === 0 ? countRules(r.stdout) : -1 };
    }),
  );
  const most = Math.max(...counts.map((c) => c.rules));
  const holding = counts.filter((c) => c.rules === most && most > 0);
  if (holding.length === 1 && holding[0] !== undefined) return holding[0].b;
  const iptables = onPath('iptables');
  const linked = iptables === undefined ? '' : realpathSync(iptables);
  if (linked.includes('legacy') && candidates.includes('legacy')) return 'legacy';
  return candidates[0] ?? 'nft';
}

/** What one run did. */
interface ProxyInitResult {
  readonly backend: IptablesBackend | 'dry-run';
  /** Per family, the iptables-restore input applied (or printed). */
  readonly applied: { readonly family: 4 | 6; readonly input: string }[];
}

/**
 * Writes (or, with `dryRun`, returns without writing) the rules for each family.
 *
 * @throws MeshidError ERR_PROXY_INIT naming the missing capability or binary, or iptables' error.
 */
export async function proxyInit(config: ProxyInitConfig, logger: Logger): Promise<ProxyInitResult> {
  const settings = proxyInitSettings(config);
  const families: (4 | 6)[] = config.disableIpv6 ? [4] : [4, 6];
  if (config.dryRun) {
    return {
      backend: 'dry-run',
      applied: families.map((family) => ({ family, input: restoreInput(settings, family, '') })),
    };
  }
  const missing = missingCapabilities();
  if (missing.length > 0) {
    throw new MeshidError(
      'ERR_PROXY_INIT',
      `meshid proxy-init needs the NET_ADMIN and NET_RAW capabilities to write the pod's iptables rules; missing: ${missing.join(', ')}. Run it as the injected init container does (securityContext.capabilities.add: [NET_ADMIN, NET_RAW], runAsUser: 0)`,
    );
  }
  const backend = await chooseBackend(config.iptablesMode);
  const applied: { family: 4 | 6; input: string }[] = [];
  for (const family of families) {
    const { save, restore } = binaries(backend, family);
    if (onPath(save) === undefined || onPath(restore) === undefined) {
      throw new MeshidError(
        'ERR_PROXY_INIT',
        `meshid proxy-init: ${save} and ${restore} are not on the PATH; install iptables (Debian package "iptables"), or pass --disable-ipv6 for IPv4 rules only`,
      );
    }
    const current = await run(save, ['-t', 'nat']);
    if (current.code !== 0) {
      throw new MeshidError(
        'ERR_PROXY_INIT',
        `meshid proxy-init: ${save} -t nat failed (${current.stderr.trim()})${family === 6 ? '; if IPv6 is off in this cluster, pass --disable-ipv6' : ''}`,
      );
    }
    const input = restoreInput(settings, family, current.stdout);
    const r = await run(restore, ['--noflush'], input);
    if (r.code !== 0) {
      throw new MeshidError(
        'ERR_PROXY_INIT',
        `meshid proxy-init: ${restore} --noflush refused the rules (${r.stderr.trim()})${family === 6 ? '; if IPv6 is off in this cluster, pass --disable-ipv6' : ''}`,
      );
    }
    applied.push({ family, input });
    logger.info({ backend, family }, 'proxy-init: nat rules written');
  }
  return { backend, applied };
}
