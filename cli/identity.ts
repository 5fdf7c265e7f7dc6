/**
 * `meshid identity FILE | --secret NS/NAME | --proxy ADMIN_ADDR`: what a certificate says (subject,
 * SANs with the SPIFFE ID, issuer chain, validity and time left, key type, serial, SHA-256) and
 * whether it chains to the current trust anchors. Exit status 1 when it does not (or has
 * expired), 0 otherwise.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { IdentityConfig, KubeClient, ProxyTlsReport } from '../core/index.js';
import {
  COMMAND_SETTINGS,
  MeshidError,
  flagName,
  formatAddress,
  isPostQuantumGroup,
  loadConfig,
  localStateInputs,
  openKubeconfig,
  parseCertificates,
  reachAnchor,
  readIdentityReport,
  systemClock,
  shortName,
} from '../core/index.js';
import type { ParsedCertificate } from '../core/index.js';
import { getWithTimeout } from './check/probes.js';
import { humanDuration, keyType, subjectAltNames, validity } from './check/x509.js';
import { styles, useColor } from './term.js';
import { startCrypto } from './runtime.js';

/** One certificate as `meshid identity` describes it (the JSON output's `certificates[]`). */
interface CertificateView {
  readonly subject: string;
  readonly issuer: string;
  readonly dnsNames: readonly string[];
  readonly spiffeIds: readonly string[];
  readonly otherUris: readonly string[];
  readonly isCa: boolean;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly timeLeft: string;
  readonly expired: boolean;
  readonly keyType: string;
  readonly serial: string;
  readonly sha256: string;
}

/** The JSON output. */
interface IdentityView {
  readonly source: string;
  readonly certificates: readonly CertificateView[];
  readonly anchors: { readonly source: string; readonly count: number } | null;
  readonly chainsToAnchors: boolean | null;
  readonly anchor?: string;
  readonly reason?: string;
  /** From a proxy's /identity: the fingerprint of the bundle it has loaded. */
  readonly proxyBundleFingerprint?: string;
  /** From a proxy's /identity: its key exchange (groups offered, with the CA, on the mesh). */
  readonly proxyTls?: ProxyTlsReport;
}

/** Describes one certificate at `now`. */
function describeCertificate(c: ParsedCertificate, now: number): CertificateView {
  const san = subjectAltNames(c.x509);
  const v = validity(c.x509);
  return {
    subject: (c.x509.subject ?? '').replace(/\n/g, ', '),
    issuer: (c.x509.issuer ?? '').replace(/\n/g, ', '),
    dnsNames: san.dns,
    spiffeIds: san.uris.filter((u) => u.startsWith('spiffe://')),
    otherUris: san.uris.filter((u) => !u.startsWith('spiffe://')),
    isCa: c.x509.ca,
    notBefore: new Date(v.notBefore).toISOString(),
    notAfter: new Date(v.notAfter).toISOString(),
    timeLeft:
      now < v.notBefore
        ? `not valid for another ${humanDuration(v.notBefore - now)}`
        : now > v.notAfter
          ? `expired ${humanDuration(now - v.notAfter)} ago`
          : humanDuration(v.notAfter - now),
    expired: now > v.notAfter || now < v.notBefore,
    keyType: keyType(c.x509),
    serial: c.x509.serialNumber.toLowerCase(),
    sha256: c.fingerprint,
  };
}

/** Splits the optional leading FILE argument from the flags. */
function splitFileArgument(argv: readonly string[]): { file?: string; rest: string[] } {
  const settings = COMMAND_SETTINGS.identity as Record<string, { kind: string }>;
  const takesValue = new Set(
    Object.entries(settings)
      .filter(([, s]) => s.kind !== 'boolean')
      .map(([k]) => `--${flagName(k)}`),
  );
  const rest: string[] = [];
  let file: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('-')) {
      rest.push(a);
      if (takesValue.has(a) && i + 1 < argv.length) rest.push(argv[++i]!);
    } else if (file === undefined) {
      file = a;
    } else {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `meshid identity: one FILE only (got "${file}" and "${a}")`,
      );
    }
  }
  return { ...(file === undefined ? {} : { file }), rest };
}

async function loadTarget(
  config: IdentityConfig,
): Promise<{ source: string; pem: string; proxyBundle?: string; proxyTls?: ProxyTlsReport }> {
  if (config.file !== undefined) {
    try {
      return { source: config.file, pem: await readFile(config.file, 'utf8') };
    } catch (err) {
      throw new MeshidError(
        'ERR_INSPECT_TARGET',
        `cannot read ${config.file}: ${(err as Error).message}`,
      );
    }
  }
  if (config.proxy !== undefined) {
    const where = formatAddress(config.proxy);
    const r = await getWithTimeout(`http://${where}/identity`, config.timeout);
    if ('error' in r)
      throw new MeshidError(
        'ERR_INSPECT_TARGET',
        `cannot reach the proxy admin at ${where}: ${r.error}`,
      );
    if (r.status !== 200)
      throw new MeshidError('ERR_INSPECT_TARGET', `${where}/identity answered ${r.status}`);
    const report = readIdentityReport(r.body);
    const proxyTls = report.tls;
    if (report.certificate?.chainPem === undefined) {
      throw new MeshidError(
        'ERR_INSPECT_TARGET',
        `the proxy at ${where} holds no certificate yet (or is too old to report it)`,
      );
    }
    return {
      source: `proxy ${where}`,
      pem: report.certificate.chainPem,
      ...(report.trustAnchors?.fingerprint === undefined
        ? {}
        : { proxyBundle: report.trustAnchors.fingerprint }),
      ...(proxyTls === undefined ? {} : { proxyTls }),
    };
  }
  const [ns, name] = config.secret!.split('/') as [string, string];
  const kube = await kubeClient(config);
  let secret;
  try {
    secret = await kube.get('v1', 'Secret', ns, name);
  } catch (err) {
    throw new MeshidError(
      'ERR_INSPECT_TARGET',
      `cannot read Secret ${ns}/${name}: ${(err as Error).message}`,
    );
  }
  if (secret === undefined)
    throw new MeshidError('ERR_INSPECT_TARGET', `Secret ${ns}/${name} not found`);
  const data = secret['data'] as Record<string, string> | undefined;
  const crt = data?.['tls.crt'] ?? data?.['crt.pem'];
  if (crt === undefined)
    throw new MeshidError('ERR_INSPECT_TARGET', `Secret ${ns}/${name} has no tls.crt`);
  return { source: `Secret ${ns}/${name}`, pem: Buffer.from(crt, 'base64').toString('utf8') };
}

async function kubeClient(config: IdentityConfig): Promise<KubeClient> {
  return openKubeconfig(config.kubeconfig!, process.env);
}

async function loadAnchors(
  config: IdentityConfig,
): Promise<{ source: string; pem: string } | undefined> {
  if (config.trustAnchors !== undefined) {
    try {
      return { source: config.trustAnchors, pem: await readFile(config.trustAnchors, 'utf8') };
    } catch (err) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `cannot read ${config.trustAnchors}: ${(err as Error).message}`,
      );
    }
  }
  if (config.kubeconfig !== undefined) {
    const kube = await kubeClient(config);
    const where = `ConfigMap ${config.namespace}/${config.trustAnchorsConfigMap}`;
    try {
      const cm = await kube.get('v1', 'ConfigMap', config.namespace, config.trustAnchorsConfigMap);
      const pem = (cm?.['data'] as Record<string, string> | undefined)?.[config.trustAnchorsKey];
      return pem === undefined ? undefined : { source: where, pem };
    } catch {
      return undefined;
    }
  }
  const local = localStateInputs(config.dir).trustAnchors;
  return existsSync(local) ? { source: local, pem: await readFile(local, 'utf8') } : undefined;
}

/** Builds the view of a configuration's certificate. */
async function inspectIdentity(config: IdentityConfig, now: number): Promise<IdentityView> {
  const target = await loadTarget(config);
  let chain: ParsedCertificate[];
  try {
    chain = parseCertificates(target.pem, 'ERR_INSPECT_TARGET');
  } catch (err) {
    throw new MeshidError('ERR_INSPECT_TARGET', `${target.source}: ${(err as Error).message}`);
  }
  if (chain.length === 0)
    throw new MeshidError('ERR_INSPECT_TARGET', `${target.source} holds no certificate`);
  const anchorsText = await loadAnchors(config);
  let anchors: ParsedCertificate[] = [];
  if (anchorsText !== undefined) {
    try {
      anchors = parseCertificates(anchorsText.pem, 'ERR_INSPECT_TARGET');
    } catch (err) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `${anchorsText.source}: ${(err as Error).message}`,
      );
    }
  }
  const verdict = anchors.length === 0 ? undefined : reachAnchor(chain, anchors, now);
  return {
    source: target.source,
    certificates: chain.map((c) => describeCertificate(c, now)),
    anchors:
      anchorsText === undefined ? null : { source: anchorsText.source, count: anchors.length },
    chainsToAnchors: verdict === undefined ? null : verdict.anchor !== undefined,
    ...(verdict?.anchor === undefined ? {} : { anchor: shortName(verdict.anchor) }),
    ...(verdict !== undefined && verdict.anchor === undefined ? { reason: verdict.reason } : {}),
    ...(target.proxyBundle === undefined ? {} : { proxyBundleFingerprint: target.proxyBundle }),
    ...(target.proxyTls === undefined ? {} : { proxyTls: target.proxyTls }),
  };
}

/** `meshid identity` */
export async function runIdentity(argv: string[]): Promise<number> {
  const { file, rest } = splitFileArgument(argv);
  const { config } = loadConfig('identity', {
    argv: file === undefined ? rest : [...rest, '--file', file],
    env: process.env,
  });
  startCrypto(config);
  const view = await inspectIdentity(config, systemClock.now());
  if (config.output === 'json') process.stdout.write(`${JSON.stringify(view, null, 2)}\n`);
  else process.stdout.write(renderIdentity(view, useColor(process.stdout, process.env)));
  return view.chainsToAnchors === false || view.certificates[0]!.expired ? 1 : 0;
}

/** The text output. */
function renderIdentity(view: IdentityView, color: boolean): string {
  const s = styles(color);
  const lines: string[] = [s.bold(`meshid identity: ${view.source}`)];
  view.certificates.forEach((c, i) => {
    lines.push(
      '',
      s.bold(i === 0 ? 'Certificate' : `Chain [${i}]${c.isCa ? ' (CA)' : ''}`),
      `  subject     ${c.subject === '' ? '(empty: the identity is in the SANs)' : c.subject}`,
      `  issuer      ${c.issuer}`,
    );
    if (c.dnsNames.length > 0) lines.push(`  DNS SANs    ${c.dnsNames.join(', ')}`);
    if (c.spiffeIds.length > 0) lines.push(`  SPIFFE ID   ${c.spiffeIds.join(', ')}`);
    if (c.otherUris.length > 0) lines.push(`  URI SANs    ${c.otherUris.join(', ')}`);
    lines.push(
      `  validity    ${c.notBefore} → ${c.notAfter} (${c.expired ? s.red(c.timeLeft) : `${c.timeLeft} left`})`,
      `  key         ${c.keyType}${c.isCa ? ', CA' : ''}`,
      `  serial      ${c.serial}`,
      `  SHA-256     ${c.sha256}`,
    );
  });
  lines.push('');
  if (view.chainsToAnchors === null) {
    lines.push(
      `${s.yellow('‼')} no trust anchors to check against (give --trust-anchors, --dir or --kubeconfig)`,
    );
  } else if (view.chainsToAnchors) {
    lines.push(
      `${s.green('✓')} chains to the current anchors (${view.anchor}, from ${view.anchors!.source})`,
    );
  } else {
    lines.push(
      `${s.red('×')} does not chain to the current anchors from ${view.anchors!.source}: ${view.reason}`,
    );
  }
  if (view.proxyBundleFingerprint !== undefined)
    lines.push(`  the proxy's loaded bundle: sha256 ${view.proxyBundleFingerprint}`);
  if (view.proxyTls !== undefined) lines.push('', ...renderProxyTls(view.proxyTls, s));
  return `${lines.join('\n')}\n`;
}

/** The key-exchange part of `--proxy`: ✓ post-quantum hybrid, ‼ a classic fallback. */
function renderProxyTls(t: ProxyTlsReport, s: ReturnType<typeof styles>): string[] {
  const counts = (c: Readonly<Record<string, number>>): string =>
    Object.entries(c)
      .map(([group, n]) => `${group === '' ? 'unknown' : group} ×${n}`)
      .join(', ') || 'none yet';
  const mark = (group: string | undefined): string =>
    group === undefined ? ' ' : isPostQuantumGroup(group) ? s.green('✓') : s.yellow('‼');
  const fellBack = (c: Readonly<Record<string, number>>): string =>
    Object.keys(c).some((g) => !isPostQuantumGroup(g)) ? s.yellow('‼') : ' ';
  return [
    s.bold('TLS key exchange'),
    `  groups      ${t.groups} (tlsGroups ${t.mode})`,
    `${mark(t.ca?.group)} CA          ${t.ca === undefined ? 'no connection yet' : `${t.ca.group} ${t.ca.cipher}`}`,
    `${fellBack(t.inbound)} inbound     ${counts(t.inbound)}`,
    `${fellBack(t.outbound)} outbound    ${counts(t.outbound)}`,
  ];
}
