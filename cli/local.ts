/**
 * `meshid local` (what `npm start` runs): the embedded default with no cluster. Initialises the
 * state folder if it is empty, runs the CA on 127.0.0.1, and shows it working: it mints a
 * development token, makes a key and CSR in memory, calls Certify over TLS (verifying the CA
 * against the anchors), and verifies the returned chain.
 */
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger, ProxyConfig } from '../core/index.js';
import {
  CertifyClient,
  DEFAULTS,
  MeshidError,
  caIdentityName,
  isMeshidError,
  formatDuration,
  createCsr,
  formatAddress,
  identityName,
  loadConfig,
  localStateInputs,
} from '../core/index.js';
import type { RunningCa } from '../identity-ca/index.js';
import { startCa } from './ca.js';
import { LOCAL_MESH_FILE } from './check/local.js';
import type { LocalMeshInfo } from './check/local.js';
import { DemoGrpcClient, demoHttpCall, startWebService } from './demo.js';
import type { WebCall } from './demo.js';
import { startProxy } from './proxy.js';
import { initLocalState } from './init.js';
import { logFormat, processLogger, startCrypto, untilStopSignal } from './runtime.js';
import { localToken } from './token.js';

const NAMING = {
  trustDomain: DEFAULTS.trustDomain,
  controlPlaneNamespace: DEFAULTS.controlPlaneNamespace,
};

/**
 * Calls the CA once for a workload and checks the answer; resolves with a one-line summary.
 */
async function selfCheck(
  ca: RunningCa,
  dir: string,
  who: { ns: string; sa: string },
  logger?: Logger,
): Promise<string> {
  const inputs = localStateInputs(dir);
  const anchorsPem = await readFile(inputs.trustAnchors, 'utf8');
  const identity = identityName({ namespace: who.ns, serviceAccount: who.sa }, NAMING);
  const token = await localToken({
    dir,
    ns: who.ns,
    sa: who.sa,
    ttl: 600_000,
    audience: DEFAULTS.audience,
  });
  // The workload's key is made here, in memory, and never leaves this process.
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const csr = createCsr({ privateKey, commonName: identity, dnsNames: [identity] });
  const client = new CertifyClient({
    address: ca.address,
    serverName: caIdentityName(NAMING),
    anchorsPem,
    ...(logger === undefined ? {} : { logger }),
  });
  try {
    const res = await client.certify({
      identity,
      token: Buffer.from(token),
      certificateSigningRequest: csr,
    });
    const leaf = new X509Certificate(res.leafCertificate);
    const chain = res.intermediateCertificates.map((d) => new X509Certificate(d));
    const anchors = anchorsPem
      .split(/(?=-----BEGIN CERTIFICATE-----)/)
      .map((p) => new X509Certificate(p));
    let cursor = leaf;
    for (const next of [...chain]) {
      if (!cursor.verify(next.publicKey)) throw new Error('returned chain does not verify');
      cursor = next;
    }
    if (!anchors.some((a) => cursor.verify(a.publicKey)))
      throw new Error('returned chain does not reach the anchors');
    return `issued ${identity}\n    ${leaf.subjectAltName}\n    serial ${leaf.serialNumber}, valid until ${new Date(res.validUntil).toISOString()}, chain verified to the trust anchor`;
  } finally {
    client.close();
  }
}

/** `meshid local` */
export async function runLocal(argv: string[]): Promise<number> {
  const { config } = loadConfig('local', { argv, env: process.env });
  startCrypto(config);
  const out = (s: string): boolean => process.stdout.write(`${s}\n`);
  const inputs = localStateInputs(config.dir);
  if (!existsSync(inputs.trustAnchors)) {
    await initLocalState({ dir: config.dir, force: false, ...NAMING });
    out(
      `meshid: initialised local state in ${config.dir} (trust anchor, issuer, token-signing key)`,
    );
  }
  const { config: caConfig } = loadConfig('ca', {
    argv: [
      '--dir',
      config.dir,
      '--listen',
      formatAddress(config.listen),
      '--admin',
      formatAddress(config.admin),
      '--workers',
      String(config.workers),
      '--log-level',
      config.logLevel === 'info' ? 'warn' : config.logLevel,
      // Its output is for people: so are the CA's and the proxies' log lines, in every worker.
      '--log-format',
      logFormat(config.logFormat, true),
      ...(config.fips ? ['--fips'] : []),
    ],
    env: {},
  });
  const logger: Logger = processLogger(caConfig, { service: 'identity-ca' }, true);
  const stopped = untilStopSignal();
  let ca: RunningCa;
  try {
    ca = await startCa(caConfig, logger);
  } catch (err) {
    // npm start's ports are fixed (those of docs/quickstart.md too): say how to move them.
    if (isMeshidError(err) && err.code === 'ERR_LISTEN_FAILED')
      throw new MeshidError(
        err.code,
        `${err.message}\n  with npm start, flags follow "--": npm start -- --listen 127.0.0.1:18080 --admin 127.0.0.1:19990`,
        { cause: err },
      );
    throw err;
  }
  out(`meshid: CA listening on ${formatAddress(ca.address)} as ${caConfig.identityName}`);
  out(`meshid: admin on http://${formatAddress(ca.adminAddress)} (/metrics, /ready, /live)`);
  // The identities the demo below runs as, so the self-check shows the very names it will use.
  for (const who of [
    { ns: 'emojivoto', sa: 'web' },
    { ns: 'emojivoto', sa: 'voting' },
  ]) {
    try {
      out(`meshid: self-check: ${await selfCheck(ca, config.dir, who, logger)}`);
    } catch (err) {
      out(`meshid: self-check FAILED: ${(err as Error).message}`);
      await ca.close();
      return 1;
    }
  }
  let mesh: LocalMesh;
  try {
    mesh = await startLocalMesh(ca, config.dir, logger, out, config.fips);
  } catch (err) {
    out(`meshid: the local mesh failed to start: ${(err as Error).message}`);
    await ca.close();
    return 1;
  }
  // Where everything listens, for "meshid check --dir" (removed again when the mesh stops).
  const meshFile = join(config.dir, LOCAL_MESH_FILE);
  const info: LocalMeshInfo = {
    ca: { address: formatAddress(ca.address), admin: formatAddress(ca.adminAddress) },
    proxies: mesh.proxies,
  };
  await writeFile(meshFile, `${JSON.stringify(info, null, 2)}\n`);
  const web = mesh.proxies.find((p) => p.name === 'web')!;
  out('meshid: try it in a second terminal (this one shows the traffic):');
  out(
    `  curl -s http://${mesh.route}/    # through voting's proxy to web over mTLS: web answers with the identity it verified`,
  );
  out(`  npx meshid check --dir ${config.dir}    # the checklist of this mesh: ✓ ‼ ×`);
  out(`  npx meshid identity --proxy ${web.admin}    # web's certificate and its chain`);
  out('meshid: Ctrl-C here stops the mesh and the CA');
  await stopped;
  out('meshid: stopping');
  await rm(meshFile, { force: true });
  await mesh.close();
  await ca.close();
  return 0;
}

interface LocalMesh {
  readonly proxies: readonly { name: string; admin: string }[];
  /** voting's outbound route to web (plain HTTP in, mTLS out). */
  readonly route: string;
  close(): Promise<void>;
}

/**
 * The local mesh: `web` behind its proxy (inbound), `voting` behind its proxy (an outbound route
 * to web's inbound, expecting web's identity), voting calling web over HTTP and gRPC every
 * second, and a view of who talks to whom, as whom, with which certificates.
 */
async function startLocalMesh(
  ca: RunningCa,
  dir: string,
  logger: Logger,
  out: (s: string) => void,
  fips: boolean,
): Promise<LocalMesh> {
  const inputs = localStateInputs(dir);
  const ids = {
    web: identityName({ namespace: 'emojivoto', serviceAccount: 'web' }, NAMING),
    voting: identityName({ namespace: 'emojivoto', serviceAccount: 'voting' }, NAMING),
  };
  await mkdir(join(dir, 'tokens'), { recursive: true, mode: 0o700 });
  const tokenFile = async (sa: string): Promise<string> => {
    const file = join(dir, 'tokens', sa);
    // Development tokens, as the kubelet would project them; renewed by restarting the mesh.
    const token = await localToken({
      dir,
      ns: 'emojivoto',
      sa,
      ttl: 24 * 3_600_000,
      audience: DEFAULTS.audience,
    });
    await writeFile(file, token, { mode: 0o600 });
    return file;
  };
  const seenByWeb: WebCall[] = [];
  const web = await startWebService((c) => seenByWeb.push(c));
  const proxyConfig = async (sa: 'web' | 'voting', extra: string[]): Promise<ProxyConfig> =>
    loadConfig('proxy', {
      argv: [
        '--identity-addr',
        formatAddress(ca.address),
        '--identity-name',
        caIdentityName(NAMING),
        '--trust-anchors',
        inputs.trustAnchors,
        '--token-file',
        await tokenFile(sa),
        '--local-identity',
        ids[sa],
        '--admin',
        '127.0.0.1:0',
        ...(fips ? ['--fips'] : []),
        ...extra,
      ],
      env: {},
    }).config;
  const quiet = logger.child({ service: 'proxy' });
  const webProxy = await startProxy(
    await proxyConfig('web', ['--inbound', '127.0.0.1:0', '--app', formatAddress(web.address)]),
    quiet,
  );
  const votingProxy = await startProxy(
    await proxyConfig('voting', [
      '--route',
      `127.0.0.1:0=${formatAddress(webProxy.inbound!)}@${ids.web}`,
    ]),
    quiet,
  );
  const route = votingProxy.outbound[0]!;
  out(
    `meshid: web    app ${formatAddress(web.address)}, proxy inbound ${formatAddress(webProxy.inbound!)} (mTLS), admin http://${formatAddress(webProxy.admin)}/identity`,
  );
  out(
    `meshid: voting calls web through its proxy at ${formatAddress(route)} (route expects ${ids.web}), admin http://${formatAddress(votingProxy.admin)}/identity`,
  );

  const grpc = new DemoGrpcClient(route);
  const totals = { http: 0, grpc: 0, failed: 0 };
  let round = 0;
  const expiresIn = (notAfter: number | undefined): string =>
    notAfter === undefined
      ? 'no certificate yet'
      : `expires in ${formatDuration(Math.max(0, Math.floor((notAfter - Date.now()) / 1000) * 1000))}`;
  const tick = async (): Promise<void> => {
    round++;
    const results = await Promise.allSettled([demoHttpCall(route), grpc.call()]);
    const [h, g] = results;
    if (h.status === 'fulfilled' && h.value === 200) totals.http++;
    else totals.failed++;
    if (g.status === 'fulfilled' && g.value === 0) totals.grpc++;
    else totals.failed++;
    if (round % 5 === 1) {
      const lastSeen = seenByWeb.at(-1)?.clientId ?? '(nobody yet)';
      const wc = webProxy.identity.current();
      const vc = votingProxy.identity.current();
      out(
        `meshid: voting → web  HTTP ${h.status === 'fulfilled' ? h.value : 'failed'}, gRPC ${g.status === 'fulfilled' ? (g.value === 0 ? 'OK' : `status ${g.value}`) : 'failed'}; web sees the caller as ${lastSeen} (verified)\n` +
          `        ${totals.http} HTTP and ${totals.grpc} gRPC calls ok, ${totals.failed} failed | certificates: web ${wc?.serialHex.slice(0, 8) ?? '-'} ${expiresIn(wc?.notAfter)}, voting ${vc?.serialHex.slice(0, 8) ?? '-'} ${expiresIn(vc?.notAfter)}`,
      );
    }
  };
  const waitReady = async (): Promise<void> => {
    const deadline = Date.now() + 15_000;
    while (
      webProxy.identity.current() === undefined ||
      votingProxy.identity.current() === undefined
    ) {
      if (Date.now() > deadline) throw new Error('the proxies got no certificates within 15 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await waitReady();
  let running = true;
  const loop = (async () => {
    while (running) {
      await tick();
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return {
    route: formatAddress(route),
    proxies: [
      { name: 'web', admin: formatAddress(webProxy.admin) },
      { name: 'voting', admin: formatAddress(votingProxy.admin) },
    ],
    async close() {
      running = false;
      await loop;
      grpc.close();
      await votingProxy.close();
      await webProxy.close();
      await web.close();
    },
  };
}
