/**
 * The proxy part of `npm run bench`: what meshid's two proxy hops cost on an HTTP/1.1 request
 * path, against no proxy at all and against nginx doing the same two-hop TLS 1.3 mTLS.
 *
 * Four paths to one backend (nginx serving a fixed "ok\n"), all on 127.0.0.1, measured in the
 * same run in alternating rounds:
 *
 * (a) direct: load → backend.
 * (b) meshid: load → `voting` proxy route listener → TLS 1.3 mTLS → `web` proxy inbound → backend.
 * (c) nginx: load → nginx "outbound" (HTTP in, `proxy_pass https://` with a client certificate,
 *     server verified against the anchors and the web identity, keep-alive pool) → nginx
 *     "inbound" (TLS 1.3, client certificate required and verified, keep-alive pool) → backend.
 *     nginx's certificates come from the same `meshid ca`, requested the way a proxy does.
 * (d) meshid over HTTP/2: load → a second `voting` proxy's HTTP listener (routing by Host) → one
 *     multiplexed HTTP/2 connection over TLS 1.3 mTLS (ALPN meshid.io/h2) → a second `web`
 *     proxy's inbound, which downgrades to HTTP/1.1 for the backend. Its own pair of processes,
 *     so that each path's RSS and CPU are its own.
 *
 * Every request carries `Host: web.bench.svc` (what (d) routes by; the others ignore it).
 *
 * Each proxy hop is one process (one nginx worker; one `meshid proxy`). Two loads:
 * - saturation: wrk, one thread, 32 keep-alive connections, for a fixed time → requests/s and
 *   wrk's latency percentiles; the proxies' RSS is sampled from /proc during it, and their CPU
 *   time per request read from /proc.
 * - a fixed rate of 1,000 requests/s: wrk is closed-loop and cannot hold a rate, so an
 *   open-loop generator in this file (run as a child process pinned to core 1) sends on a fixed
 *   schedule over a few keep-alive sockets whatever the responses do, and records each latency.
 *   Meanwhile every server is pinned to core 0 (`taskset -a -p`), so the generator's own
 *   scheduling does not compete with the path it measures, and, when root, the servers and the
 *   generator run at nice -15 so that unrelated work on a shared machine does not decide the
 *   p99; both are undone afterwards.
 *
 * Every response is checked: wrk's non-2xx/3xx count and socket errors, the generator's
 * statuses, and one request per path that reads back the `l5d-client-id` the backend received.
 * Any failure fails the bench. Medians over the rounds; ratios are taken within each round.
 *
 * Standalone: `npm run build && node --import tsx test/bench/proxy.ts`.
 */
import 'reflect-metadata';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatAddress } from '../../core/index.js';
import { SIDECAR_NODE_OPTIONS } from '../../proxy/index.js';
import { MESHID_BIN, adminGet, metricValue, startCaProcess } from '../support/ca-process.js';
import type { CaProcess } from '../support/ca-process.js';
import { rssMb } from '../support/proc.js';
import { certificateFromCa, freePort } from '../support/proxy-process.js';
import { CA_IDENTITY, HOUR, idOf, makeTestState } from '../support/state.js';
import type { TestState } from '../support/state.js';
import {
  CONNECTIONS,
  HOST,
  NICE,
  RATE,
  RATE_SECONDS,
  ensureTools,
  get,
  measureRounds,
  median,
  nginxMain,
  spawnChild,
  startNginx,
  sum,
  tcpOpen,
  waitUp,
} from './proxy-load.js';
import type { Child, Out, Rounds } from './proxy-load.js';

const env = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const ROUNDS = env('BENCH_PROXY_ROUNDS', env('BENCH_ROUNDS', 3));
/** wrk duration per saturation run. */
const SECONDS = env('BENCH_PROXY_SECONDS', 8);
/** wrk once per path before the rounds: JIT, connections, TLS sessions. */
const WARMUP_SECONDS = env('BENCH_PROXY_WARMUP_SECONDS', 5);
/**
 * Node arguments for the two meshid proxies: by default the ones the sidecar is meant to run
 * with (SIDECAR_NODE_OPTIONS); override e.g. with `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile
 * them under the same load (profiles are written when they stop), or with '' for none.
 */
export const PROXY_NODE_ARGS = (
  process.env['BENCH_PROXY_NODE_ARGS'] ?? SIDECAR_NODE_OPTIONS.join(' ')
)
  .split(' ')
  .filter(Boolean);

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const WEB = idOf('bench', 'web');
const VOTING = idOf('bench', 'voting');

const PATHS = ['direct', 'meshid', 'nginx', 'meshidH2'] as const;
type PathName = (typeof PATHS)[number];
const LABEL: Record<PathName, string> = {
  direct: '(a) direct',
  meshid: '(b) meshid, two proxies',
  nginx: '(c) nginx, two proxies',
  meshidH2: '(d) meshid, HTTP/2 between the proxies',
};
// ---------------------------------------------------------------------------------------------
// The bench

type RoundResult = Rounds<PathName>;

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const f0 = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : 'n/a');

/** The proxy bench: sets everything up, measures, prints, writes bench-results/proxy.json. */
export async function runProxyBench(out: Out): Promise<void> {
  const tools = ensureTools(out);
  const cores = availableParallelism();
  const loadBefore = loadavg().map(f2).join(' ');
  out(
    `Proxy path (HTTP/1.1, 127.0.0.1, ${cores} cores): ${ROUNDS} rounds × (wrk ${SECONDS}s, ${CONNECTIONS} connections | open loop ${RATE} req/s × ${RATE_SECONDS}s) per path, after a ${WARMUP_SECONDS}s warm-up`,
  );

  const children: Child[] = [];
  let state: TestState | undefined;
  let ca: CaProcess | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'meshid-proxy-bench-'));
  try {
    state = await makeTestState();
    ca = await startCaProcess([
      ...state.caArgs,
      '--workers',
      '1',
      '--cert-lifetime',
      '1h',
      '--log-level',
      'warn',
    ]);

    // The backend.
    const backendPort = await freePort();
    const backend = await startNginx(
      tools.nginx,
      dir,
      'backend',
      nginxMain(
        dir,
        'backend',
        `  server {
    listen 127.0.0.1:${backendPort};
    default_type text/plain;
    location = /id { return 200 "$http_l5d_client_id\\n"; }
    location / { return 200 "ok\\n"; }
  }`,
      ),
    );
    children.push(backend);
    await waitUp(backend, 'the backend', async () => (await get(backendPort, '/')).status === 200);

    // meshid: web (inbound → backend) and voting (route → web's inbound). The proxy announces
    // "listening" at info only, so at --log-level warn its ports are chosen here.
    const admins = new Map<string, number>();
    const startProxy = async (sa: string, args: string[], name = sa): Promise<Child> => {
      const tokenFile = join(state!.dir, `${sa}-token`);
      await writeFile(tokenFile, await state!.token('bench', sa, { ttlMs: 2 * HOUR }));
      const admin = await freePort();
      admins.set(name, admin);
      const child = spawnChild(`meshid ${name}`, [
        process.execPath,
        ...PROXY_NODE_ARGS,
        MESHID_BIN,
        'proxy',
        '--identity-addr',
        formatAddress(ca!.address),
        '--identity-name',
        CA_IDENTITY,
        '--trust-anchors',
        state!.anchorsFile,
        '--token-file',
        tokenFile,
        '--local-identity',
        idOf('bench', sa),
        '--admin',
        `127.0.0.1:${admin}`,
        '--log-level',
        'warn',
        ...args,
      ]);
      children.push(child);
      await waitUp(
        child,
        `the ${name} proxy to be ready`,
        async () => (await adminGet({ host: '127.0.0.1', port: admin }, '/ready')).status === 200,
      );
      return child;
    };
    const webInbound = await freePort();
    const web = await startProxy('web', [
      '--inbound',
      `127.0.0.1:${webInbound}`,
      '--app',
      `127.0.0.1:${backendPort}`,
    ]);
    const votingRoute = await freePort();
    const voting = await startProxy('voting', [
      '--route',
      `127.0.0.1:${votingRoute}=127.0.0.1:${webInbound}@${WEB}`,
    ]);

    // (d): a web and a voting proxy of their own, voting's HTTP listener routing HOST to web.
    const webH2Inbound = await freePort();
    const webH2 = await startProxy(
      'web',
      ['--inbound', `127.0.0.1:${webH2Inbound}`, '--app', `127.0.0.1:${backendPort}`],
      'web-h2',
    );
    const votingH2Listener = await freePort();
    const votingH2 = await startProxy(
      'voting',
      [
        ...['--outbound', `127.0.0.1:${votingH2Listener}`],
        ...['--destination', `${HOST}=127.0.0.1:${webH2Inbound}@${WEB}`],
      ],
      'voting-h2',
    );

    // nginx: certificates from the same CA, then inbound and outbound.
    const nWeb = await certificateFromCa(state, ca.address, 'bench', 'web');
    const nVoting = await certificateFromCa(state, ca.address, 'bench', 'voting');
    const files = {
      anchors: state.anchorsFile,
      webCrt: join(dir, 'web.crt'),
      webKey: join(dir, 'web.key'),
      votingCrt: join(dir, 'voting.crt'),
      votingKey: join(dir, 'voting.key'),
    };
    await writeFile(files.webCrt, nWeb.chainPem);
    await writeFile(files.webKey, nWeb.keyPem, { mode: 0o600 });
    await writeFile(files.votingCrt, nVoting.chainPem);
    await writeFile(files.votingKey, nVoting.keyPem, { mode: 0o600 });
    const nginxInboundPort = await freePort();
    const nginxOutboundPort = await freePort();
    const upstream = (name: string, port: number): string => `  upstream ${name} {
    server 127.0.0.1:${port};
    keepalive ${CONNECTIONS};
    keepalive_requests 1000000;
  }`;
    const nginxInbound = await startNginx(
      tools.nginx,
      dir,
      'inbound',
      nginxMain(
        dir,
        'inbound',
        `${upstream('backend', backendPort)}
  server {
    listen 127.0.0.1:${nginxInboundPort} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${files.webCrt};
    ssl_certificate_key ${files.webKey};
    ssl_client_certificate ${files.anchors};
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header l5d-client-id $ssl_client_verify;
    }
  }`,
      ),
    );
    children.push(nginxInbound);
    const nginxOutbound = await startNginx(
      tools.nginx,
      dir,
      'outbound',
      nginxMain(
        dir,
        'outbound',
        `${upstream('inbound', nginxInboundPort)}
  server {
    listen 127.0.0.1:${nginxOutboundPort};
    location / {
      proxy_pass https://inbound;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate ${files.votingCrt};
      proxy_ssl_certificate_key ${files.votingKey};
      proxy_ssl_trusted_certificate ${files.anchors};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 3;
      proxy_ssl_name ${WEB};
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }`,
      ),
    );
    children.push(nginxOutbound);
    for (const [child, port] of [
      [nginxInbound, nginxInboundPort],
      [nginxOutbound, nginxOutboundPort],
    ] as const) {
      await waitUp(child, child.name, () => tcpOpen(port));
    }

    // RSS of each proxy right after start, before any traffic.
    const rssAtStartMb = Object.fromEntries(
      [voting, web, nginxOutbound, nginxInbound, votingH2, webH2].map((c) => [
        c.name,
        sum(c.pids().map(rssMb)),
      ]),
    );
    const portOf: Record<PathName, number> = {
      direct: backendPort,
      meshid: votingRoute,
      nginx: nginxOutboundPort,
      meshidH2: votingH2Listener,
    };
    const proxiesOf: Record<PathName, Child[]> = {
      direct: [],
      meshid: [voting, web],
      nginx: [nginxOutbound, nginxInbound],
      meshidH2: [votingH2, webH2],
    };

    // Correctness: each path answers, and the backend sees the caller's verified identity.
    const seen: Record<PathName, string> = { direct: '', meshid: '', nginx: '', meshidH2: '' };
    for (const p of PATHS) {
      const r = await get(portOf[p], '/id');
      if (r.status !== 200) throw new Error(`${p}: GET /id answered ${r.status}: ${r.body}`);
      seen[p] = r.body.trim();
    }
    for (const p of ['meshid', 'meshidH2'] as const) {
      if (seen[p] !== VOTING)
        throw new Error(`${p} path: the backend saw l5d-client-id "${seen[p]}"`);
    }
    // Stock nginx has no variable for a certificate's SAN (the leaves have no subject), so its
    // inbound passes the verification result instead: SUCCESS only for a verified client.
    if (seen.nginx !== 'SUCCESS')
      throw new Error(`nginx path: the backend saw l5d-client-id "${seen.nginx}"`);
    out(
      `  backend saw l5d-client-id: meshid "${seen.meshid}", meshid over HTTP/2 "${seen.meshidH2}", nginx "${seen.nginx}"`,
    );
    // (d) must really be HTTP/2 between the proxies: web-h2 counts its inbound connections.
    const h2Connections = metricValue(
      (await adminGet({ host: '127.0.0.1', port: admins.get('web-h2')! }, '/metrics')).body,
      'meshid_proxy_connections_total',
      { direction: 'inbound', protocol: 'http2' },
    );
    if (!(h2Connections >= 1))
      throw new Error(`meshidH2 path: web-h2 saw no inbound HTTP/2 connection (${h2Connections})`);

    // Each meshid proxy's own account of a fixed-rate run, from its /metrics (prom-client's
    // process metrics): the event-loop delay (its histogram restarts at every scrape, so the
    // scrape before the run starts the window) and the GC time by kind (V8's pauses and
    // incremental marking steps on the main thread) within the run.
    const gcKinds = ['major', 'incremental', 'minor'] as const;
    const scrape = async (name: string): Promise<string> =>
      (await adminGet({ host: '127.0.0.1', port: admins.get(name)! }, '/metrics')).body;
    const gcOf = (text: string): Record<(typeof gcKinds)[number], { n: number; s: number }> =>
      Object.fromEntries(
        gcKinds.map((kind) => [
          kind,
          {
            n: metricValue(text, 'nodejs_gc_duration_seconds_count', { kind }) || 0,
            s: metricValue(text, 'nodejs_gc_duration_seconds_sum', { kind }) || 0,
          },
        ]),
      ) as Record<(typeof gcKinds)[number], { n: number; s: number }>;
    const rateProbe = async (p: PathName): Promise<() => Promise<string>> => {
      const names = proxiesOf[p]
        .map((c) => c.name.replace(/^meshid /, ''))
        .filter((n) => admins.has(n));
      const before = new Map(
        await Promise.all(names.map(async (n) => [n, gcOf(await scrape(n))] as const)),
      );
      return async () => {
        const parts = await Promise.all(
          names.map(async (n) => {
            const text = await scrape(n);
            const gc = gcOf(text);
            const b = before.get(n)!;
            const lagMax = metricValue(text, 'nodejs_eventloop_lag_max_seconds') * 1000;
            const lagP99 = metricValue(text, 'nodejs_eventloop_lag_p99_seconds') * 1000;
            const kinds = gcKinds
              .map((k) => `${k} ${gc[k].n - b[k].n} (${f1((gc[k].s - b[k].s) * 1000)} ms)`)
              .join(', ');
            return `${n}: loop delay p99 ${f1(lagP99)} ms, max ${f1(lagMax)} ms; GC ${kinds}`;
          }),
        );
        return parts.join('; ');
      };
    };

    const rounds = await measureRounds({
      rateProbe,
      paths: PATHS,
      wrkBin: tools.wrk,
      targetOf: portOf,
      proxiesOf,
      rounds: ROUNDS,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      servers: () => [
        ...children.flatMap((c) => c.pids()),
        ...(ca!.proc.pid === undefined ? [] : [ca!.proc.pid]),
      ],
      out,
    });

    // Summaries: medians over rounds; ratios and differences taken within each round.
    const med = (fn: (x: RoundResult) => number): number => median(rounds.map(fn));
    // Per proxy of a path, the maximum over the rounds' saturation runs.
    const maxOver = (
      p: PathName,
      of: (x: RoundResult['saturation'][PathName]) => Record<string, number>,
    ): Record<string, number> =>
      Object.fromEntries(
        proxiesOf[p].map((c) => [
          c.name,
          Math.max(...rounds.map((x) => of(x.saturation[p])[c.name] ?? 0)),
        ]),
      );
    const summary = Object.fromEntries(
      PATHS.map((p) => [
        p,
        {
          rps: med((x) => x.saturation[p].rps),
          vsDirect: med((x) => x.saturation[p].rps / x.saturation.direct.rps),
          vsNginx: med((x) => x.saturation[p].rps / x.saturation.nginx.rps),
          satP50ms: med((x) => x.saturation[p].p50ms),
          satP99ms: med((x) => x.saturation[p].p99ms),
          rateP50ms: med((x) => x.rate[p].p50ms),
          rateP99ms: med((x) => x.rate[p].p99ms),
          p99AddedMs: med((x) => x.rate[p].p99ms - x.rate.direct.p99ms),
          p50AddedMs: med((x) => x.rate[p].p50ms - x.rate.direct.p50ms),
          cpuUsPerRequest: med((x) => x.saturation[p].cpuUsPerRequest),
          rssMaxMb: maxOver(p, (x) => x.rssMb),
          rssAnonMaxMb: maxOver(p, (x) => x.rssAnonMb),
          rssFileMaxMb: maxOver(p, (x) => x.rssFileMb),
        },
      ]),
    ) as Record<
      PathName,
      {
        rps: number;
        vsDirect: number;
        vsNginx: number;
        satP50ms: number;
        satP99ms: number;
        rateP50ms: number;
        rateP99ms: number;
        p99AddedMs: number;
        p50AddedMs: number;
        cpuUsPerRequest: number;
        rssMaxMb: Record<string, number>;
        rssAnonMaxMb: Record<string, number>;
        rssFileMaxMb: Record<string, number>;
      }
    >;

    out();
    out(
      `| path | req/s at saturation | ÷ (a) | ÷ (c) | p50 / p99 ms at saturation | p50 / p99 ms at ${RATE.toLocaleString('en')} req/s | p99 added over direct | RSS per proxy, MB (max; RssAnon / RssFile) | proxy CPU µs/req |`,
    );
    out('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const p of PATHS) {
      const s = summary[p];
      const rss = Object.entries(s.rssMaxMb)
        .map(
          ([n, mb]) =>
            `${n.replace(/^(meshid|nginx) /, '')} ${f1(mb)} (${f1(s.rssAnonMaxMb[n] ?? NaN)} / ${f1(s.rssFileMaxMb[n] ?? NaN)})`,
        )
        .join(', ');
      out(
        `| ${LABEL[p]} | ${f0(s.rps)} | ${f2(s.vsDirect)} | ${f2(s.vsNginx)} | ${f2(s.satP50ms)} / ${f2(s.satP99ms)} | ${f2(s.rateP50ms)} / ${f2(s.rateP99ms)} | ${p === 'direct' ? '—' : `${f2(s.p99AddedMs)} ms`} | ${rss === '' ? '—' : rss} | ${p === 'direct' ? '—' : f1(s.cpuUsPerRequest)} |`,
      );
    }
    out();
    const m = summary.meshid;
    const meshidRss = Math.max(...Object.values(m.rssMaxMb));
    const meshidAnon = Math.max(...Object.values(m.rssAnonMaxMb));
    const verdict = (ok: boolean): string => (ok ? 'met' : 'NOT MET');
    out('targets:');
    out(
      `  meshid's two hops add < 1 ms at p99 at ${RATE} req/s: ${f2(m.p99AddedMs)} ms added (${f2(m.rateP99ms)} vs ${f2(summary.direct.rateP99ms)} ms) — ${verdict(m.p99AddedMs < 1)}`,
    );
    out(
      `  meshid ≥ 0.5 of nginx's saturation throughput: ${f2(m.vsNginx)} — ${verdict(m.vsNginx >= 0.5)}`,
    );
    const d = summary.meshidH2;
    out(
      `  (d) HTTP/2 between the proxies, same run: ${f2(d.vsNginx)} of nginx's saturation throughput (${f2(d.vsNginx / m.vsNginx)} of (b)), ${f2(d.p99AddedMs)} ms added at p99 at ${RATE} req/s, RSS max ${f1(Math.max(...Object.values(d.rssMaxMb)))} MB (no target of its own; reported)`,
    );
    out(
      `  RSS < 80 MB per meshid proxy: max ${f1(meshidRss)} MB under load — ${verdict(meshidRss < 80)}; of which private (RssAnon) at most ${f1(meshidAnon)} MB, the rest file-backed pages shared by every proxy on a node (right after start, before traffic: ${Object.entries(
        rssAtStartMb,
      )
        .map(([n, mb]) => `${n} ${f1(mb)}`)
        .join(', ')} MB)`,
    );
    out(
      `notes: medians of ${ROUNDS} rounds; ratios and added latency are taken within each round, then their median. Saturation: all processes share the ${cores} cores unpinned, so wrk, both proxies and the backend compete for CPU and req/s reflects CPU per request as much as anything. Fixed rate: every server (backend, proxies, CA) pinned to core 0 and the generator alone on core 1, all at nice ${NICE} when root; latency is from handing the request to the socket to the end of the response. nginx RSS is master + worker. meshid's route listener forwards bytes (one TLS connection per client connection) and its inbound relays HTTP/1.1 on one backend connection per client connection, rewriting only request heads; the meshid proxies run with ${PROXY_NODE_ARGS.join(' ') || 'no node options'}; nginx parses HTTP at both hops and pools upstream connections. Load average ${loadBefore} before, ${loadavg().map(f2).join(' ')} after: other work on the machine shows up as noise.`,
    );

    const resultsDir = join(ROOT, 'bench-results');
    mkdirSync(resultsDir, { recursive: true });
    writeFileSync(
      join(resultsDir, 'proxy.json'),
      JSON.stringify(
        {
          settings: {
            rounds: ROUNDS,
            seconds: SECONDS,
            warmupSeconds: WARMUP_SECONDS,
            rate: RATE,
            rateSeconds: RATE_SECONDS,
            connections: CONNECTIONS,
            cores,
            node: process.version,
          },
          summary,
          rssAtStartMb,
          targets: {
            p99AddedUnder1ms: m.p99AddedMs < 1,
            halfOfNginx: m.vsNginx >= 0.5,
            rssUnder80Mb: meshidRss < 80,
          },
          rounds,
        },
        null,
        2,
      ),
    );
  } finally {
    for (const c of children.reverse()) await c.stop().catch(() => undefined);
    await ca?.stop().catch(() => undefined);
    await state?.cleanup().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

const isMain =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) await runProxyBench((s = '') => process.stdout.write(`${s}\n`));
