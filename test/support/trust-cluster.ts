/**
 * Where the trust controllers' integration tests start: the Kubernetes API test server with
 * `meshid install --cert-manager` applied, reached as the installed `meshid-trust`
 * ServiceAccount (so the rendered RBAC allows or refuses every call), the anchors ConfigMap
 * written by one sync pass; and a rotation controller over it, staged up to its propagate step.
 */
import { strict as assert } from 'node:assert';
import { createLogger, loadConfig, openKubeClient, systemRandom } from '../../core/index.js';
import { ManualClock } from '../../core/clock.js';
import type { KubeClient, Logger } from '../../core/index.js';
import { kubeTrustSettings } from '../../cli/trust-kube.js';
import {
  KubeRotationBackend,
  RotationController,
  SyncController,
  trustKubeApi,
} from '../../trust-bundle/index.js';
import type { BundleCopies, TrustKubeApi } from '../../trust-bundle/index.js';
import { applyCertManagerInstall } from './cert-manager-install.js';
import type { CertManagerSimulator } from './cert-manager-sim.js';
import { startKubeApiServer } from './kube-api-server/index.js';
import type { KubeApiServer, KubeApiServerOptions, KubeObject } from './kube-api-server/index.js';

export const NS = 'linkerd';
export const NAME = 'linkerd-identity-trust-roots';
export const KEY = 'ca-bundle.crt';
export const trustConfig = loadConfig('trust', {
  argv: ['--cert-lifetime', '10s', '--clock-skew', '1s'],
  env: {},
}).config;
export const settings = kubeTrustSettings(trustConfig);

export type ConfigMap = KubeObject & { data?: Record<string, string> };

/** A logger whose records the test reads. */
export function recordingLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: 'info',
    destination: {
      write: (l: string) => void lines.push(JSON.parse(l) as Record<string, unknown>),
    },
  });
  return { logger, lines };
}

export interface TrustCluster {
  readonly server: KubeApiServer;
  /** The client as `meshid-trust`, and the trust controllers' view of it. */
  readonly kube: KubeClient;
  readonly api: TrustKubeApi;
  readonly sim: CertManagerSimulator;
  readonly clock: ManualClock;
  readonly log: ReturnType<typeof recordingLogger>;
  /** Closes the client, stops the simulator and the server. */
  stop(): Promise<void>;
}

/**
 * Starts the server (`options` say which namespaces and kinds it has), applies the install and
 * has one sync pass write the anchors ConfigMap.
 *
 * @example
 * ```ts
 * const t = await startTrustCluster({ namespaces: ['emojivoto'] });
 * ```
 */
export async function startTrustCluster(options: KubeApiServerOptions): Promise<TrustCluster> {
  const server = await startKubeApiServer(options);
  const clock = new ManualClock(Date.now());
  const sim = await applyCertManagerInstall(server, clock);
  const { token } = await server.mintToken({
    namespace: NS,
    serviceAccount: 'meshid-trust',
    expirationSeconds: 3600,
  });
  const kube = await openKubeClient(server.kubeConfig({ token }));
  const api = trustKubeApi(kube);
  const log = recordingLogger();
  assert.equal(
    await new SyncController({ api, settings, clock, logger: log.logger }).reconcile(),
    'written',
  );
  return {
    server,
    kube,
    api,
    sim,
    clock,
    log,
    stop: async () => {
      kube.close();
      await sim.stop();
      await server.stop();
    },
  };
}

/**
 * A rotation controller over `t` that observes no proxies and whose propagate step waits for
 * `copies`, started and its new root issued: its next step stages the bundle.
 *
 * @example
 * ```ts
 * const rotation = await stagedRotation(t, bundleCopiesOf(copies));
 * assert.equal((await rotation.step()).state?.phase, 'propagate');
 * ```
 */
export async function stagedRotation(
  t: TrustCluster,
  copies: BundleCopies,
): Promise<RotationController> {
  const rotation = new RotationController({
    backend: new KubeRotationBackend(t.api, settings, t.clock),
    observer: { description: 'none', observe: () => Promise.resolve([]) },
    copies,
    clock: t.clock,
    random: systemRandom,
    logger: t.log.logger,
    leafLifetime: 10_000,
    clockSkew: 1000,
    waitTimeout: 3_600_000,
    holder: 'test',
  });
  await rotation.start();
  await rotation.step();
  await t.sim.reconcile();
  return rotation;
}
