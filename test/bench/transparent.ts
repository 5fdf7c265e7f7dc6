/**
 * The transparent part of `npm run bench`: what transparent mode's two hops cost against the
 * explicit route path and nginx, in one run, with every path between two "pods" (network
 * namespaces on one bridge, as test/support/netns.ts builds them for the e2e tests), so each
 * path crosses the same veth links:
 *
 * (a) direct: wrk in pod cx → the backend (nginx) in pod sx.
 * (b) explicit route: wrk in cx → `voting` proxy's route listener on cx's loopback → TLS 1.3
 *     mTLS → `web` proxy's inbound in sx → the backend on sx's loopback.
 * (d) explicit HTTP listener: wrk in cx → a second `voting` proxy's HTTP listener (routing by
 *     Host) → one multiplexed HTTP/2 connection over mTLS → the same `web` inbound.
 * (t) transparent: wrk in pod ct dials pod st's IP and app port as if there were no mesh; ct's
 *     nat rules (`meshid proxy-init`) redirect it to ct's `meshid proxy --transparent`, which asks
 *     a real `meshid destination` (reading the Kubernetes API test double) about st:8080 and
 *     carries the request over mTLS (HTTP/2 between the proxies) to st:4143; st's nat rules
 *     redirect inbound 8080 there too, so this is what an injected pod does; st's proxy reads the
 *     original port and forwards to the backend on st's loopback.
 * (c) nginx: wrk in cx → nginx "outbound" on cx's loopback → TLS 1.3 mTLS → nginx "inbound" in
 *     sx → the backend.
 *
 * Saturation (wrk, 32 connections) and the fixed rate of 1,000 req/s (open-loop generator in the
 * client pod) as in proxy.ts, with the proxies' CPU per request from /proc. Every path is
 * checked first: the backend must see the caller's verified identity through (b), (d) and (t).
 * Needs root, iproute2 and iptables (as the transparent e2e tests).
 *
 * Standalone: `npm run build && node --import tsx test/bench/transparent.ts`, or
 * `BENCH_PARTS=transparent` with run.ts.
 */
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { renderInstall } from '../../cli/install.js';
import { formatAddress } from '../../core/index.js';
import {
  MESHID_BIN,
  adminGet,
  startCaProcess,
  startMeshid,
  waitFor,
} from '../support/ca-process.js';
import type { CaProcess, MeshidProcess } from '../support/ca-process.js';
import { pod } from '../support/destination-objects.js';
import { startKubeApiServer } from '../support/kube-api-server/index.js';
import type { KubeApiServer, KubeObject } from '../support/kube-api-server/index.js';
import { NetnsLab } from '../support/netns.js';
import type { NetnsPod } from '../support/netns.js';
import { rssMb } from '../support/proc.js';
import { certificateFromCa } from '../support/proxy-process.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';
import {
  CONNECTIONS,
  HOST,
  NICE,
  RATE,
  RATE_SECONDS,
  ensureTools,
  measureRounds,
  median,
  nginxMain,
  spawnChild,
  startNginx,
  sum,
  waitUp,
} from './proxy-load.js';
import type { Child, LoadTarget, Out, Rounds } from './proxy-load.js';
import { PROXY_NODE_ARGS } from './proxy.js';

const env = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const ROUNDS = env('BENCH_PROXY_ROUNDS', env('BENCH_ROUNDS', 3));
const SECONDS = env('BENCH_PROXY_SECONDS', 8);
const WARMUP_SECONDS = env('BENCH_PROXY_WARMUP_SECONDS', 5);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const NS = 'bench';
const VOTING = idOf(NS, 'voting');
const WEB = idOf(NS, 'web');
const APP_PORT = 8080;
const PROXY_UID = 2102;

const PATHS = ['direct', 'explicit', 'explicitH2', 'transparent', 'nginx'] as const;
type PathName = (typeof PATHS)[number];
const LABEL: Record<PathName, string> = {
  direct: '(a) direct, pod to pod',
  explicit: '(b) explicit route listener',
  explicitH2: '(d) explicit HTTP listener, HTTP/2 between the proxies',
  transparent: '(t) transparent (iptables, destination service)',
  nginx: '(c) nginx, two proxies',
};

const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');

/** Everything the bench started, stopped in reverse order at the end. */
interface Lab {
  readonly netns: NetnsLab;
  readonly state: TestState;
  readonly dir: string;
  readonly ca: CaProcess;
  readonly children: Child[];
  api?: KubeApiServer;
  destination?: MeshidProcess;
}

/** The backend every path ends at: nginx in `p`, answering "ok" and, on /id, l5d-client-id. */
async function startBackend(nginx: string, lab: Lab, p: NetnsPod): Promise<Child> {
  const name = `backend-${p.name}`;
  const backend = await startNginx(
    nginx,
    lab.dir,
    name,
    nginxMain(
      lab.dir,
      name,
      `  server {
    listen 0.0.0.0:${APP_PORT};
    default_type text/plain;
    location = /id { return 200 "$http_l5d_client_id\\n"; }
    location / { return 200 "ok\\n"; }
  }`,
    ),
    p.prefix(),
  );
  lab.children.push(backend);
  await waitUp(
    backend,
    name,
    async () => (await curlIn(p, `http://127.0.0.1:${APP_PORT}/`)) === 'ok',
  );
  return backend;
}

/** GET from inside a pod; the body, trimmed (or the curl error). */
async function curlIn(p: NetnsPod, url: string): Promise<string> {
  const r = await p.run('curl', ['-sS', '--max-time', '5', '-H', `Host: ${HOST}`, url]);
  return (r.code === 0 ? r.stdout : `curl failed: ${r.stderr}`).trim();
}

/**
 * The directories node writes profiles and reports to (`--cpu-prof-dir=…`, `--heap-prof-dir=…`,
 * `--diagnostic-dir=…` in BENCH_PROXY_NODE_ARGS), made and opened to every user (sticky, as
 * /tmp): the transparent proxies run as UID 2102 and otherwise lose their profiles silently at
 * exit.
 */
function openProfileDirs(args: readonly string[], out: Out): void {
  for (const arg of args) {
    const m = /^--(?:cpu-prof-dir|heap-prof-dir|diagnostic-dir)=(.+)$/.exec(arg);
    if (m === null) continue;
    mkdirSync(m[1]!, { recursive: true });
    chmodSync(m[1]!, 0o1777);
    out(
      `  ${m[1]} opened to UID ${PROXY_UID} (the transparent proxies write their profiles there)`,
    );
  }
}

/** A `meshid proxy` in pod `p`, as UID `uid`, ready (its admin /ready) before this resolves. */
async function startProxy(
  lab: Lab,
  p: NetnsPod,
  sa: string,
  name: string,
  adminPort: number,
  args: readonly string[],
  uid?: number,
): Promise<Child> {
  const token = join(lab.dir, `${name}-token`);
  await writeFile(token, await lab.state.token(NS, sa, { ttlMs: 2 * HOUR }));
  await chmod(token, 0o644);
  const child = spawnChild(`meshid ${name}`, [
    ...p.prefix(uid),
    process.execPath,
    ...PROXY_NODE_ARGS,
    MESHID_BIN,
    'proxy',
    ...['--identity-addr', formatAddress(lab.ca.address), '--identity-name', CA_IDENTITY],
    ...['--trust-anchors', join(lab.dir, 'anchors.pem'), '--token-file', token],
    ...['--local-identity', idOf(NS, sa), '--admin', `${p.ip}:${adminPort}`],
    ...['--log-level', 'warn', ...args],
  ]);
  lab.children.push(child);
  await waitUp(
    child,
    `the ${name} proxy to be ready`,
    async () => (await adminGet({ host: p.ip, port: adminPort }, '/ready')).status === 200,
  );
  return child;
}

/**
 * The Kubernetes API test double holding the two transparent pods, and `meshid destination`
 * reading it (its RBAC from `meshid install`, its own mesh certificate).
 */
async function startDestination(lab: Lab, ct: NetnsPod, st: NetnsPod): Promise<string> {
  const api = await startKubeApiServer({ namespaces: [NS] });
  lab.api = api;
  for (const doc of parseAllDocuments(
    renderInstall({ argv: ['--destination'], env: {}, now: Date.now() }),
  )) {
    const obj = doc.toJS() as KubeObject | null;
    if (obj !== null) api.create(obj);
  }
  for (const [name, ip, sa] of [
    ['web-0', st.ip, 'web'],
    ['voting-0', ct.ip, 'voting'],
  ] as const) {
    const { status, ...rest } = pod(NS, name, ip, { meshed: true, sa }) as {
      status: Record<string, unknown>;
    };
    api.updateStatus({ ...api.create(rest as KubeObject), status });
  }
  const { token } = await api.mintToken({
    namespace: 'linkerd',
    serviceAccount: 'linkerd-destination',
    expirationSeconds: 3600,
  });
  const kubeconfig = join(lab.dir, 'destination-kubeconfig');
  await api.writeKubeconfig(kubeconfig, { token });
  const dstToken = join(lab.dir, 'destination-token');
  await writeFile(
    dstToken,
    await lab.state.token('linkerd', 'linkerd-destination', { ttlMs: HOUR }),
  );
  const dst = await startMeshid('destination', [
    ...['--kubeconfig', kubeconfig, '--admin', '127.0.0.1:0', '--listen', `${lab.netns.hostIp}:0`],
    ...['--identity-addr', formatAddress(lab.ca.address), '--identity-name', CA_IDENTITY],
    ...['--trust-anchors', lab.state.anchorsFile, '--token-file', dstToken],
  ]);
  lab.destination = dst;
  const [host = '', port = ''] = String(dst.listening['admin']).split(/:(?=\d+$)/);
  await waitFor('the destination service ready', async () =>
    (await adminGet({ host, port: Number(port) }, '/ready')).status === 200 ? true : undefined,
  );
  return String(dst.listening['address']);
}

type Upstream = (name: string, to: string) => string;

/** nginx's inbound hop: TLS 1.3, a client certificate required and verified, to the backend. */
function nginxInbound(files: Record<string, string>, upstream: Upstream): string {
  return `${upstream('backend', `127.0.0.1:${APP_PORT}`)}
  server {
    listen 0.0.0.0:4443 ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${files['webCrt']};
    ssl_certificate_key ${files['webKey']};
    ssl_client_certificate ${files['anchors']};
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header l5d-client-id $ssl_client_verify;
    }
  }`;
}

/** nginx's outbound hop: HTTP in, mTLS out to the inbound hop, the server's identity verified. */
function nginxOutbound(
  files: Record<string, string>,
  upstream: Upstream,
  sxIp: string,
  port: number,
): string {
  return `${upstream('inbound', `${sxIp}:4443`)}
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass https://inbound;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate ${files['votingCrt']};
      proxy_ssl_certificate_key ${files['votingKey']};
      proxy_ssl_trusted_certificate ${files['anchors']};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 3;
      proxy_ssl_name ${WEB};
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }`;
}

/** nginx's two hops: outbound on cx's loopback, inbound on sx, certificates from the same CA. */
async function startNginxPair(
  nginx: string,
  lab: Lab,
  cx: NetnsPod,
  sx: NetnsPod,
): Promise<{ outbound: Child; inbound: Child; port: number }> {
  const files: Record<string, string> = { anchors: join(lab.dir, 'anchors.pem') };
  for (const sa of ['web', 'voting']) {
    const c = await certificateFromCa(lab.state, lab.ca.address, NS, sa);
    files[`${sa}Crt`] = join(lab.dir, `nginx-${sa}.crt`);
    files[`${sa}Key`] = join(lab.dir, `nginx-${sa}.key`);
    await writeFile(files[`${sa}Crt`]!, c.chainPem);
    await writeFile(files[`${sa}Key`]!, c.keyPem, { mode: 0o600 });
  }
  const upstream: Upstream = (name, to) => `  upstream ${name} {
    server ${to};
    keepalive ${CONNECTIONS};
    keepalive_requests 1000000;
  }`;
  const inbound = await startNginx(
    nginx,
    lab.dir,
    'nginx-inbound',
    nginxMain(lab.dir, 'nginx-inbound', nginxInbound(files, upstream)),
    sx.prefix(),
  );
  lab.children.push(inbound);
  const port = 7002;
  const outbound = await startNginx(
    nginx,
    lab.dir,
    'nginx-outbound',
    nginxMain(lab.dir, 'nginx-outbound', nginxOutbound(files, upstream, sx.ip, port)),
    cx.prefix(),
  );
  lab.children.push(outbound);
  await waitUp(
    outbound,
    'nginx',
    async () => (await curlIn(cx, `http://127.0.0.1:${port}/`)) === 'ok',
  );
  return { outbound, inbound, port };
}

/** Every path answers, and the backend sees the caller's verified identity where it should. */
async function checkPaths(
  targetOf: Record<PathName, { host: string; port: number }>,
  podOf: Record<PathName, NetnsPod>,
): Promise<void> {
  const expected: Record<PathName, string> = {
    direct: '',
    explicit: VOTING,
    explicitH2: VOTING,
    transparent: VOTING,
    // Stock nginx has no variable for the certificate's SAN: its inbound passes the verdict.
    nginx: 'SUCCESS',
  };
  for (const p of PATHS) {
    const t = targetOf[p];
    const seen = await curlIn(podOf[p], `http://${t.host}:${t.port}/id`);
    if (seen !== expected[p]) {
      throw new Error(`${p} path: the backend saw l5d-client-id "${seen}", not "${expected[p]}"`);
    }
  }
}

/** What each path measured: medians over rounds, ratios taken within each round. */
interface PathSummary {
  rps: number;
  vsExplicit: number;
  vsNginx: number;
  rateP50ms: number;
  rateP99ms: number;
  p99AddedMs: number;
  cpuUsPerRequest: number;
  cpuVsExplicit: number;
  rssMaxMb: number;
}

function summarize(
  rounds: readonly Rounds<PathName>[],
  proxiesOf: Record<PathName, Child[]>,
): Record<PathName, PathSummary> {
  const med = (fn: (x: Rounds<PathName>) => number): number => median(rounds.map(fn));
  return Object.fromEntries(
    PATHS.map((p) => [
      p,
      {
        rps: med((x) => x.saturation[p].rps),
        vsExplicit: med((x) => x.saturation[p].rps / x.saturation.explicit.rps),
        vsNginx: med((x) => x.saturation[p].rps / x.saturation.nginx.rps),
        rateP50ms: med((x) => x.rate[p].p50ms),
        rateP99ms: med((x) => x.rate[p].p99ms),
        p99AddedMs: med((x) => x.rate[p].p99ms - x.rate.direct.p99ms),
        cpuUsPerRequest: med((x) => x.saturation[p].cpuUsPerRequest),
        cpuVsExplicit: med(
          (x) => x.saturation[p].cpuUsPerRequest / x.saturation.explicit.cpuUsPerRequest,
        ),
        rssMaxMb: Math.max(
          0,
          ...proxiesOf[p].flatMap((c) => rounds.map((x) => x.saturation[p].rssMb[c.name] ?? 0)),
        ),
      },
    ]),
  ) as Record<PathName, PathSummary>;
}

function report(out: Out, s: Record<PathName, PathSummary>, loadBefore: string): void {
  out();
  out(
    `| path | req/s at saturation | ÷ (b) | ÷ (c) | p50 / p99 ms at ${RATE.toLocaleString('en')} req/s | p99 added over direct | proxies' CPU µs/req | ÷ (b) | RSS max per proxy, MB |`,
  );
  out('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const p of PATHS) {
    const x = s[p];
    const proxied = p !== 'direct';
    out(
      `| ${LABEL[p]} | ${f0(x.rps)} | ${f2(x.vsExplicit)} | ${f2(x.vsNginx)} | ${f2(x.rateP50ms)} / ${f2(x.rateP99ms)} | ${proxied ? `${f2(x.p99AddedMs)} ms` : '—'} | ${proxied ? f1(x.cpuUsPerRequest) : '—'} | ${proxied ? f2(x.cpuVsExplicit) : '—'} | ${proxied ? f1(x.rssMaxMb) : '—'} |`,
    );
  }
  const t = s.transparent;
  const b = s.explicit;
  const verdict = (ok: boolean): string => (ok ? 'met' : 'NOT MET');
  out();
  out('target: the transparent path within 10 % of the explicit route path (b):');
  out(`  throughput ${f2(t.vsExplicit)} of (b) — ${verdict(t.vsExplicit >= 0.9)}`);
  out(`  CPU per request ${f2(t.cpuVsExplicit)} of (b) — ${verdict(t.cpuVsExplicit <= 1.1)}`);
  out(
    `  p99 added at ${RATE} req/s: ${f2(t.p99AddedMs)} ms vs ${f2(b.p99AddedMs)} ms — ${verdict(t.p99AddedMs <= b.p99AddedMs * 1.1 || t.p99AddedMs - b.p99AddedMs < 0.1)}`,
  );
  out(
    `  (for the same HTTP/2 carriage explicitly, (d): throughput ${f2(s.explicitH2.vsExplicit)} of (b), CPU ${f2(s.explicitH2.cpuVsExplicit)} of (b); (t) ÷ (d) throughput ${f2(t.rps / s.explicitH2.rps)})`,
  );
  out(
    `notes: medians of ${ROUNDS} rounds; ratios taken within each round. Every path crosses the same veth pair and bridge between two network namespaces. Load average ${loadBefore} before, ${loadavg().map(f2).join(' ')} after (the machine is shared: read the ratios).`,
  );
}

/** Starts the pods, the control plane and every proxy; returns the paths to load. */
async function setUp(
  nginx: string,
  lab: Lab,
): Promise<{
  targetOf: Record<PathName, { host: string; port: number; prefix: readonly string[] }>;
  podOf: Record<PathName, NetnsPod>;
  proxiesOf: Record<PathName, Child[]>;
}> {
  const [cx, sx, ct, st] = [
    await lab.netns.addPod('cx'),
    await lab.netns.addPod('sx'),
    await lab.netns.addPod('ct'),
    await lab.netns.addPod('st'),
  ];
  for (const p of [ct, st]) {
    const init = await p.run(process.execPath, [
      MESHID_BIN,
      'proxy-init',
      '--proxy-uid',
      String(PROXY_UID),
    ]);
    if (init.code !== 0) throw new Error(`proxy-init in ${p.name}: ${init.stderr}`);
  }
  await startBackend(nginx, lab, sx);
  await startBackend(nginx, lab, st);
  const dstAddr = await startDestination(lab, ct, st);

  const web = await startProxy(lab, sx, 'web', 'web', 4191, [
    ...['--inbound', '[::]:4143', '--app', `127.0.0.1:${APP_PORT}`],
  ]);
  const voting = await startProxy(lab, cx, 'voting', 'voting', 4191, [
    ...['--route', `127.0.0.1:7001=${sx.ip}:4143@${WEB}`],
  ]);
  const votingH2 = await startProxy(lab, cx, 'voting', 'voting-h2', 4192, [
    ...['--outbound', '127.0.0.1:4140', '--destination', `${HOST}=${sx.ip}:4143@${WEB}`],
  ]);
  const transparent = ['--transparent', '--destination-addr', dstAddr];
  const webT = await startProxy(lab, st, 'web', 'web-t', 4191, transparent, PROXY_UID);
  const votingT = await startProxy(lab, ct, 'voting', 'voting-t', 4191, transparent, PROXY_UID);
  const n = await startNginxPair(nginx, lab, cx, sx);

  const inCx = (host: string, port: number): { host: string; port: number; prefix: string[] } => ({
    host,
    port,
    prefix: cx.prefix(),
  });
  return {
    targetOf: {
      direct: inCx(sx.ip, APP_PORT),
      explicit: inCx('127.0.0.1', 7001),
      explicitH2: inCx('127.0.0.1', 4140),
      transparent: { host: st.ip, port: APP_PORT, prefix: ct.prefix() },
      nginx: inCx('127.0.0.1', n.port),
    },
    podOf: { direct: cx, explicit: cx, explicitH2: cx, transparent: ct, nginx: cx },
    proxiesOf: {
      direct: [],
      explicit: [voting, web],
      explicitH2: [votingH2, web],
      transparent: [votingT, webT],
      nginx: [n.outbound, n.inbound],
    },
  };
}

/** Writes bench-results/transparent.json. */
function writeResults(r: {
  summary: Record<PathName, PathSummary>;
  rssAtStart: Record<string, number>;
  rounds: Rounds<PathName>[];
  loadBefore: string;
}): void {
  const resultsDir = join(ROOT, 'bench-results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(
    join(resultsDir, 'transparent.json'),
    JSON.stringify(
      {
        settings: {
          rounds: ROUNDS,
          seconds: SECONDS,
          rate: RATE,
          nice: NICE,
          node: process.version,
        },
        loadBefore: r.loadBefore,
        loadAfter: loadavg(),
        summary: r.summary,
        rssAtStart: r.rssAtStart,
        rounds: r.rounds,
      },
      null,
      2,
    ),
  );
}

/** The transparent bench: sets up, measures, prints, writes bench-results/transparent.json. */
export async function runTransparentBench(out: Out): Promise<void> {
  const tools = ensureTools(out);
  for (const tool of ['ip', 'iptables', 'curl']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
      throw new Error(
        `the transparent bench needs ${tool} (apt-get install iproute2 iptables curl)`,
      );
    }
  }
  if (process.getuid?.() !== 0)
    throw new Error('the transparent bench needs root (network namespaces, iptables)');
  const loadBefore = loadavg().map(f2).join(' ');
  out(
    `Transparent path (HTTP/1.1 between network namespaces, ${availableParallelism()} cores): ${ROUNDS} rounds × (wrk ${SECONDS}s, ${CONNECTIONS} connections | open loop ${RATE} req/s × ${RATE_SECONDS}s) per path, after a ${WARMUP_SECONDS}s warm-up; load average ${loadBefore}`,
  );
  openProfileDirs(PROXY_NODE_ARGS, out);
  const netns = await NetnsLab.create({ tag: 'bench' });
  let lab: Lab | undefined;
  try {
    const state = await makeTestState();
    const dir = await mkdtemp(join(tmpdir(), 'meshid-transparent-bench-'));
    await chmod(dir, 0o755);
    await copyFile(state.anchorsFile, join(dir, 'anchors.pem'));
    await chmod(join(dir, 'anchors.pem'), 0o644);
    const ca = await startCaProcess([
      ...state.caArgs,
      ...['--workers', '1', '--cert-lifetime', '1h', '--listen', `${netns.hostIp}:0`],
    ]);
    lab = { netns, state, dir, ca, children: [] };
    const { targetOf, podOf, proxiesOf } = await setUp(tools.nginx, lab);
    await checkPaths(targetOf, podOf);
    out(`  every path answers; the backend saw ${VOTING} through (b), (d) and (t)`);
    const rssAtStart = Object.fromEntries(
      PATHS.flatMap((p) => proxiesOf[p]).map((c) => [c.name, sum(c.pids().map(rssMb))]),
    );
    const children = lab.children;
    const rounds = await measureRounds({
      paths: PATHS,
      wrkBin: tools.wrk,
      targetOf: targetOf as Record<PathName, LoadTarget>,
      proxiesOf,
      rounds: ROUNDS,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      servers: () => [
        ...children.flatMap((c) => c.pids()),
        ...(ca.proc.pid === undefined ? [] : [ca.proc.pid]),
      ],
      out,
    });
    const summary = summarize(rounds, proxiesOf);
    report(out, summary, loadBefore);
    writeResults({ summary, rssAtStart, rounds, loadBefore });
  } finally {
    for (const c of (lab?.children ?? []).reverse()) await c.stop().catch(() => undefined);
    await lab?.destination?.stop().catch(() => undefined);
    await lab?.api?.stop().catch(() => undefined);
    await lab?.ca.stop().catch(() => undefined);
    await netns.destroy();
    await lab?.state.cleanup().catch(() => undefined);
    if (lab !== undefined) await rm(lab.dir, { recursive: true, force: true });
  }
}

const isMain =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) await runTransparentBench((s = '') => process.stdout.write(`${s}\n`));
